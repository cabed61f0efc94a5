"""JIDs from text: the one place where the backend parses them (RFC 7622).

Every JID the backend reads, from a stanza (a ``from``, an item's ``jid``) or from a
frontend (a bridge parameter), goes through :func:`parse_jid` (raises) or
:func:`jid_or_none` (``None`` for what is missing or invalid).  Both are stricter than
Twisted's ``JID``, which takes ``@example.org`` or ``a@example.org/`` as JIDs without
those parts: RFC 7622 forbids empty parts, characters XML can't carry, and parts over
1,023 octets.

Parsing a JID applies stringprep to each of its parts, which costs more than answering
a request from the cache: the JIDs of the texts seen last are kept (a
:class:`~twisted.words.protocols.jabber.jid.JID` is never changed once made, so one
object may serve every caller).
"""

from functools import lru_cache

from twisted.words.protocols.jabber import jid as jabber_jid

from libervia.backend.core.xml_tools import NOT_XML_CHAR

#: distinct texts kept
CACHE_SIZE = 4096
#: longest part of a JID, in octets of UTF-8 (RFC 7622 §3.2 to 3.4)
MAX_PART = 1023
#: longest text that can be a JID: three parts, "@" and "/"; longer ones are refused
#: before stringprep
MAX_JID_LENGTH = 3 * MAX_PART + 2

InvalidJID = jabber_jid.InvalidFormat


@lru_cache(maxsize=CACHE_SIZE)
def _parse(text: str) -> jabber_jid.JID:
    try:
        parsed = jabber_jid.JID(text)
    except (UnicodeError, ValueError) as e:  # stringprep refusing a character
        raise InvalidJID(f"{e}") from None
    except IndexError:
        # Twisted's nameprep on an empty label ("a@example..org")
        raise InvalidJID("empty label in the domain") from None
    bare, slash, __ = text.partition("/")
    if "@" in bare and not parsed.user:
        raise InvalidJID("empty local part")
    if slash and not parsed.resource:
        raise InvalidJID("empty resource")
    if not parsed.host:
        raise InvalidJID("no domain")
    for part, what in ((parsed.user, "local part"), (parsed.host, "domain"),
                       (parsed.resource, "resource")):
        if part is not None and len(part.encode("utf-8")) > MAX_PART:
            raise InvalidJID(f"its {what} is longer than {MAX_PART} octets")
    return parsed


def parse_jid(text: str) -> jabber_jid.JID:
    """The JID of ``text``; an invalid one raises each time it is asked.

    :raise twisted.words.protocols.jabber.jid.InvalidFormat: (:data:`InvalidJID`) not
        a JID RFC 7622 allows, or not text
    """
    if not isinstance(text, str):
        raise InvalidJID(f"{type(text).__name__}, not text")
    if not text:
        raise InvalidJID("empty")
    if len(text) > MAX_JID_LENGTH:
        raise InvalidJID(f"{len(text)} characters, more than a JID may have")
    if NOT_XML_CHAR.search(text):
        raise InvalidJID("a character XML forbids")
    return _parse(text)


def jid_or_none(text: str | None) -> jabber_jid.JID | None:
    """The JID of ``text`` (a stanza's attribute, a frontend's parameter), ``None`` if
    it is missing, empty or invalid."""
    if not text:
        return None
    try:
        return parse_jid(text)
    except InvalidJID:
        return None
