"""Indenting XML for people, and checking the XML a user gives, with expat only.

``xml.dom.minidom`` and ``xml.etree`` would do, but the first costs ``li`` several
milliseconds to import and the second renames namespace prefixes (``ns0:``); expat is
a C module already loaded by the standard library, and keeps the document as written.
"""

from __future__ import annotations

from xml.parsers import expat

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from typing import Any


class XMLError(ValueError):
    """The text is not well-formed XML; the message gives the line and column."""


class _Element:
    __slots__ = ("name", "attributes", "children")

    def __init__(self, name: str, attributes: list[str]) -> None:
        self.name = name
        # ordered [name, value, name, value...] as expat gives them
        self.attributes = attributes
        self.children: list[Any] = []


def parse(text: str) -> _Element:
    """Parse ``text`` (one element, namespaces kept as written).

    :raise XMLError: the text is not well-formed
    """
    stack: list[_Element] = []
    roots: list[_Element] = []

    def start(name: str, attributes: list[str]) -> None:
        element = _Element(name, attributes)
        if stack:
            stack[-1].children.append(element)
        else:
            roots.append(element)
        stack.append(element)

    def end(__: str) -> None:
        stack.pop()

    def data(content: str) -> None:
        if stack:
            stack[-1].children.append(content)

    _feed(_parser(start, end, data), text)
    return roots[0]


def _parser(start: Any, end: Any, data: Any) -> Any:
    """An expat parser calling these handlers, attributes as ordered lists."""
    parser = expat.ParserCreate()
    parser.ordered_attributes = True
    parser.buffer_text = True
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    return parser


def _feed(parser: Any, data: str | bytes, wrapped_lines: int = 0,
          lines: int | None = None) -> None:
    """Parse the whole of ``data``; expat's error becomes an :class:`XMLError` whose
    line is the text's (``wrapped_lines`` lines of wrapping before the ``lines`` of the
    text).

    :raise XMLError: not well-formed
    """
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        line = e.lineno - wrapped_lines
        if lines is not None and line > lines:
            raise XMLError("invalid XML: the text ends before an element is closed"
                           ) from None
        raise XMLError(f"invalid XML at line {max(1, line)}, column {e.offset + 1}: "
                       f"{expat.ErrorString(e.code)}") from None


def split_elements(text: str) -> list[str]:
    """The top-level elements of ``text`` (several elements one after the other, as a
    file of items is), each as written; white space and comments between them are
    dropped, and the whole is checked.

    :raise XMLError: the text is not well-formed, or holds text outside of elements
    """
    # expat takes one root: the elements go in one, on a line of its own so that the
    # line numbers of errors are the text's (minus one)
    wrapped = f"<li-elements>\n{text}\n</li-elements>".encode()
    depth = 0
    starts: list[int] = []
    spans: list[tuple[int, int]] = []
    ended = False  # a top-level element just ended: the next event says where

    def mark() -> None:
        nonlocal ended
        if ended:
            spans.append((starts[-1], parser.CurrentByteIndex))
            ended = False

    def start(name: str, attributes: Any) -> None:
        nonlocal depth
        mark()
        if depth == 1:
            starts.append(parser.CurrentByteIndex)
        depth += 1

    def end(name: str) -> None:
        nonlocal depth, ended
        mark()
        depth -= 1
        ended = depth == 1

    def data(content: str) -> None:
        mark()
        if depth == 1 and content.strip():
            raise XMLError(f"text outside of an element at line "
                           f"{parser.CurrentLineNumber - 1}: {content.strip()[:40]!r}")

    def other(content: str) -> None:
        mark()

    parser = _parser(start, end, data)
    parser.DefaultHandlerExpand = other
    _feed(parser, wrapped, wrapped_lines=1, lines=text.count("\n") + 1)
    return [wrapped[first:last].decode().strip() for first, last in spans]


def _escape(text: str, quote: bool = False) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if quote:
        text = text.replace('"', "&quot;")
    return text


def _start_tag(element: _Element, close: bool) -> str:
    pairs = zip(element.attributes[::2], element.attributes[1::2], strict=True)
    attributes = "".join(f' {name}="{_escape(value, True)}"' for name, value in pairs)
    return f"<{element.name}{attributes}{'/>' if close else '>'}"


def _inline(element: _Element) -> str:
    if not element.children:
        return _start_tag(element, close=True)
    inner = "".join(
        _escape(child) if isinstance(child, str) else _inline(child)
        for child in element.children
    )
    return f"{_start_tag(element, close=False)}{inner}</{element.name}>"


def _write(element: _Element, indent: str, level: int, lines: list[str]) -> None:
    prefix = indent * level
    children = [c for c in element.children if not isinstance(c, str)]
    if not children or any(isinstance(c, str) and c.strip() for c in element.children):
        # empty, text only or mixed content: whitespace there is meaningful, keep it
        lines.append(prefix + _inline(element))
        return
    lines.append(prefix + _start_tag(element, close=False))
    for child in children:
        _write(child, indent, level + 1, lines)
    lines.append(f"{prefix}</{element.name}>")


def indent(text: str, indent: str = "  ") -> str:
    """``text`` (one XML element) indented, one child element per line.

    Elements holding text (or text mixed with elements, as XHTML) are kept on one
    line, as written: adding whitespace there would change their content.

    :raise XMLError: the text is not well-formed
    """
    lines: list[str] = []
    _write(parse(text), indent, 0, lines)
    return "\n".join(lines)
