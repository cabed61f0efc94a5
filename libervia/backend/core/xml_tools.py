"""Parsing XML text given by frontends or read from the database into domish elements.

The parser is Twisted's (expat), the same that reads the XMPP stream.  The text is
parsed inside a synthetic root, so a document type declaration (and with it any entity
definition) can't appear: XMPP forbids them, and they are the door to entity-expansion
attacks.
"""

import re

from twisted.words.xish import domish

_WRAPPER = "libervia-xml-wrapper"
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
#: a character XML 1.0 can't carry (§2.2 ``Char``: control characters, lone surrogates,
#: U+FFFE and U+FFFF); sent in a stanza, it makes the server close the stream
NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: default limit of the text parsed, in bytes
MAX_SIZE = 10 * 1024 * 1024


class XMLError(ValueError):
    """The text is not one well-formed XML element."""


def parse_xml(text: str | bytes, max_size: int = MAX_SIZE) -> domish.Element:
    """Parse one XML element.

    :raise XMLError: not well-formed, more or less than one element, too large, or a
        DTD / undefined entity
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise XMLError(f"XML is not valid UTF-8: {e}") from None
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise XMLError("XML text holds a lone surrogate, which no encoding carries") from None
    if size > max_size:
        raise XMLError(f"XML is larger than {max_size} bytes")
    text = _XML_DECLARATION.sub("", text, count=1)
    elements: list[domish.Element] = []
    stream = domish.elementStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = elements.append
    stream.DocumentEndEvent = lambda: None
    try:
        stream.parse(f"<{_WRAPPER}>{text}</{_WRAPPER}>".encode())
    except domish.ParserError as e:
        raise XMLError(f"invalid XML: {e}") from None
    if len(elements) != 1:
        raise XMLError(f"expected one XML element, found {len(elements)}")
    element = elements[0]
    element.parent = None
    return element
