"""XEP-0277: Microblogging over XMPP, as far as the pubsub cache needs it.

Blogs are pubsub nodes named ``urn:xmpp:microblog:0`` (and comment nodes, whose names
start with ``urn:xmpp:microblog:0:comments/``) holding Atom entries (RFC 4287).  This
plugin registers an analyser with the pubsub cache so that such nodes are
synchronised, and a parser that extracts from each entry the data searches look at:

``id``, ``title``, ``content`` (plain text), ``published``, ``updated`` (ISO 8601, UTC,
when the date can be read), ``author`` (``name``, ``uri``, ``jid``), ``categories``
(terms) and ``links`` (``href``, ``rel``).

Entries come from anyone: every field is optional, and a malformed one is left out
(``None`` or an empty list) without making the parser fail.
"""

import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from libervia.backend.core.constants import C
from libervia.backend.core.interfaces import Client, Host
from libervia.backend.core.log import getLogger

log = getLogger(__name__)

NS_MICROBLOG = "urn:xmpp:microblog:0"
NS_COMMENTS_PREFIX = NS_MICROBLOG + ":comments/"
NS_ATOM = "http://www.w3.org/2005/Atom"
NS_XHTML = "http://www.w3.org/1999/xhtml"

#: longest text kept for a title or a content (characters)
MAX_TEXT = 100_000

PLUGIN_INFO = {
    "name": "Microblogging over XMPP",
    "import_name": "XEP-0277",
    "type": C.PLUG_TYPE_XEP,
    "modes": [C.PLUG_MODE_CLIENT],
    "protocols": ["XEP-0277"],
    "dependencies": ["XEP-0060"],
    "recommendations": ["PUBSUB_CACHE"],
    "main": "XEP_0277",
    "handler": False,
    # contacts' blogs are pushed by their servers (XEP-0163), and cached
    "notify": ["urn:xmpp:microblog:0"],
    "description": "Microblogging: blog nodes are cached and their entries parsed.",
}

_SPACES = re.compile(r"\s+")


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()[:MAX_TEXT]


def _child(parent: domish.Element, name: str) -> domish.Element | None:
    for elt in parent.elements(NS_ATOM, name):
        return elt
    return None


def _first(parent: domish.Element, *names: str) -> domish.Element | None:
    for name in names:
        elt = _child(parent, name)
        if elt is not None:
            return elt
    return None


def _children(parent: domish.Element, name: str) -> list[domish.Element]:
    return list(parent.elements(NS_ATOM, name))


def element_text(elt: domish.Element) -> str:
    """All the text of an element and its descendants (iteratively: no recursion
    limit for deeply nested XML), with white space collapsed."""
    parts: list[str] = []
    stack: list[Any] = [elt]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, domish.Element):
            if node is not elt and node.uri == NS_XHTML and node.name in _BLOCKS:
                parts.append(" ")
            stack.extend(reversed(node.children))
    return _clean("".join(parts))


# elements after which words must not stick together
_BLOCKS = frozenset({"p", "div", "br", "li", "tr", "td", "h1", "h2", "h3", "h4", "h5",
                     "h6", "blockquote", "pre"})


class _HTMLText(HTMLParser):
    """Text of an HTML fragment (the escaped HTML of ``type="html"`` Atom texts)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in _BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        elif tag in _BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_text(html: str) -> str:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return _clean("".join(parser.parts))


def atom_text(elt: domish.Element | None) -> str | None:
    """Plain text of an Atom text construct (``type`` text, html or xhtml)."""
    if elt is None:
        return None
    kind = (elt.getAttribute("type") or "text").strip().lower()
    if kind == "xhtml":
        div = next((c for c in elt.elements() if c.name == "div"), None)
        text = element_text(div if div is not None else elt)
    elif kind == "html" or kind == "text/html":
        text = html_text(element_text(elt))
    else:
        text = element_text(elt)
    return text or None


def atom_date(elt: domish.Element | None) -> str | None:
    """An RFC 3339 date as ISO 8601 in UTC (``None`` if missing or unreadable)."""
    if elt is None:
        return None
    value = element_text(elt)
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.astimezone(UTC).isoformat()


def _author(entry: domish.Element) -> dict[str, str | None] | None:
    author = _child(entry, "author")
    if author is None:
        return None
    name = atom_text(_child(author, "name"))
    uri = atom_text(_child(author, "uri"))
    jid = None
    if uri and uri.startswith("xmpp:"):
        jid = uri[5:].split("?", 1)[0] or None
    if name is None and uri is None:
        return None
    return {"name": name, "uri": uri, "jid": jid}


def _categories(entry: domish.Element) -> list[str]:
    terms = []
    for category in _children(entry, "category"):
        term = (category.getAttribute("term") or "").strip()
        if term and term not in terms:
            terms.append(term)
    return terms


def _links(entry: domish.Element) -> list[dict[str, str]]:
    links = []
    for link in _children(entry, "link"):
        href = (link.getAttribute("href") or "").strip()
        if href:
            links.append({"href": href,
                          "rel": (link.getAttribute("rel") or "alternate").strip()})
    return links


def parse_entry(item: domish.Element) -> dict[str, Any] | None:
    """Data of the Atom entry carried by a pubsub ``<item/>``; ``None`` if it holds
    no entry.  Each field that can't be read is ``None`` (or empty); never raises."""
    entry = next((c for c in item.elements() if (c.uri, c.name) == (NS_ATOM, "entry")),
                 None)
    if entry is None:
        return None
    fields = {
        "id": lambda: atom_text(_child(entry, "id")),
        "title": lambda: atom_text(_child(entry, "title")),
        "content": lambda: atom_text(_first(entry, "content", "summary")),
        "published": lambda: atom_date(_child(entry, "published")),
        "updated": lambda: atom_date(_child(entry, "updated")),
        "author": lambda: _author(entry),
        "categories": lambda: _categories(entry),
        "links": lambda: _links(entry),
    }
    data: dict[str, Any] = {}
    for name, read in fields.items():
        try:
            data[name] = read()
        except Exception as e:  # hostile input must not stop the caching of the item
            log.debug("unreadable {field} in item {item}: {error}", field=name,
                      item=item.getAttribute("id"), error=e)
            data[name] = [] if name in ("categories", "links") else None
    return data


class XEP_0277:  # noqa: N801
    """Microblogging; ``host.plugins["XEP-0277"]``."""

    def __init__(self, host: Host) -> None:
        self.host = host
        cache = host.plugins.get("PUBSUB_CACHE")
        if cache is None:
            log.info("no pubsub cache: blogs won't be cached")
            return
        cache.register_analyser({
            "name": "XEP-0277",
            "type": "blog",
            "node": NS_MICROBLOG,
            "namespace": NS_ATOM,
            "to_sync": True,
            "parser": self.parser,
            "match_cb": self._match,
        })

    @staticmethod
    def _match(client: Client, analyse: dict[str, Any]) -> bool:
        node = analyse["node"]
        if node.startswith(NS_COMMENTS_PREFIX):
            analyse["subtype"] = "comments"
        elif node != NS_MICROBLOG and not node.startswith(NS_MICROBLOG + ":"):
            # only the blog node and its sub-nodes, not e.g. "urn:xmpp:microblog:0x"
            return False
        return True

    @staticmethod
    def parser(client: Client, item: domish.Element, service: JID, node: str
               ) -> dict[str, Any] | None:
        """The pubsub cache's parser: :func:`parse_entry`."""
        return parse_entry(item)
