"""Analysers: what decides how a kind of node is cached.

Plugins register an :class:`Analyser` (or the equivalent dict) with the cache
(``host.plugins["PUBSUB_CACHE"].register_analyser``).  When a node is first asked for,
the analysers are tried in their ``order``; the first that matches gives the node its
analyser name, type and subtype, and says whether it is synchronised.
"""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from libervia.backend.core.async_utils import maybe_async_call
from libervia.backend.core.interfaces import Client
from libervia.backend.core.log import getLogger
from libervia.backend.plugins.pubsub_cache.state import CacheError

log = getLogger(__name__)

#: ``parser(client, item_elt, service, node)``: JSON-serialisable data of an item
Parser = Callable[[Any, domish.Element, jabber_jid.JID, str], Any]
#: ``match_cb(client, analyse)``: may change the analyse, ``False`` refuses the match
MatchCallback = Callable[[Any, dict[str, Any]], Any]
#: ``sample(node)``: one item of the node (or None) and its metadata
Sampler = Callable[[], Awaitable[tuple[domish.Element | None, dict[str, Any]]]]


class InvalidAnalyser(CacheError, ValueError):
    """An analyser given to the cache is invalid; the message says what is wrong."""


def _check_text(name: str, key: str, value: Any, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not value:
        if required:
            raise InvalidAnalyser(f"analyser {name!r} needs a {key!r} (non-empty string)")
        raise InvalidAnalyser(f"analyser {name!r}: {key!r} must be a non-empty string")


@dataclass(frozen=True)
class Analyser:
    """How a kind of node is cached; checked when built.

    :param name: unique name, stored with each node it matched
    :param type: what the node holds (e.g. ``"blog"``), stored with the node and usable
        to filter searches
    :param subtype: a finer kind (e.g. ``"comments"``)
    :param node: the node name must start with this
    :param namespace: the payload of the node's items (their first child element) must
        be in this namespace; at least one of ``node`` and ``namespace`` is given, and
        when both are, both must match
    :param order: analysers are tried by increasing order (by name for equal orders),
        the first matching one wins
    :param to_sync: synchronise matching nodes: keep all their items in the cache and
        answer from it
    :param parser: ``parser(client, item_elt, service, node)`` returning
        JSON-serialisable data extracted from an item (plain function, coroutine
        function or returning a Deferred); stored beside the item's XML, it is what
        searches on parsed data look at.  An exception or a time-out leaves the item
        without parsed data, with a log line
    :param match_cb: ``match_cb(client, analyse)`` called when the node and namespace
        match; ``analyse`` is a dict describing the node (``service``, ``node``,
        ``namespace``, ``analyser``, ``type``, ``subtype``, ``to_sync``, ``item`` (the
        sample item or None), ``metadata``); the callback may change ``type``,
        ``subtype`` and ``to_sync`` in it, and returns ``False`` to refuse the match
        (the next analyser is then tried)
    :raise InvalidAnalyser: a missing or wrongly typed field
    """

    name: str
    type: str
    subtype: str | None = None
    node: str | None = None
    namespace: str | None = None
    order: int = 0
    to_sync: bool = False
    parser: Parser | None = None
    match_cb: MatchCallback | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidAnalyser("an analyser needs a 'name' (non-empty string)")
        name = self.name
        _check_text(name, "type", self.type, required=True)
        for key in ("subtype", "node", "namespace"):
            _check_text(name, key, getattr(self, key))
        if not self.node and not self.namespace:
            raise InvalidAnalyser(f"analyser {name!r} needs 'node' and/or 'namespace'")
        if isinstance(self.order, bool) or not isinstance(self.order, int):
            raise InvalidAnalyser(f"analyser {name!r}: 'order' must be an integer")
        if not isinstance(self.to_sync, bool):
            raise InvalidAnalyser(f"analyser {name!r}: 'to_sync' must be a boolean")
        for key in ("parser", "match_cb"):
            if getattr(self, key) is not None and not callable(getattr(self, key)):
                raise InvalidAnalyser(f"analyser {name!r}: {key!r} must be callable")

    @classmethod
    def from_dict(cls, analyser: Mapping[str, Any]) -> "Analyser":
        """An analyser given as a dict of the same fields.

        :raise InvalidAnalyser: not a dict, an unknown key, or an invalid field
        """
        if not isinstance(analyser, Mapping):
            raise InvalidAnalyser("an analyser must be a dict")
        unknown = set(analyser) - {f.name for f in fields(cls)}
        if unknown:
            raise InvalidAnalyser(f"unknown analyser key(s): {', '.join(sorted(unknown))}")
        # missing required fields are checked (and named) like wrongly typed ones
        return cls(**({"name": None, "type": None} | dict(analyser)))

    def covers(self, node: str) -> bool:
        """Whether the node's name is one this analyser may match."""
        return self.node is None or node.startswith(self.node)


class Analysers:
    """The registered analysers, tried in order."""

    def __init__(self) -> None:
        self.by_name: dict[str, Analyser] = {}
        self._sorted: list[Analyser] = []

    def register(self, analyser: "Analyser | Mapping[str, Any]") -> Analyser:
        """Add an analyser (an :class:`Analyser` or a dict of its fields).

        :raise InvalidAnalyser: invalid, or its name is already registered
        """
        if not isinstance(analyser, Analyser):
            analyser = Analyser.from_dict(analyser)
        if analyser.name in self.by_name:
            raise InvalidAnalyser(f"an analyser named {analyser.name!r} is already "
                                  "registered")
        self.by_name[analyser.name] = analyser
        self._sorted = sorted(self.by_name.values(), key=lambda a: (a.order, a.name))
        log.debug("pubsub cache analyser {name} registered", name=analyser.name)
        return analyser

    def candidates(self, node: str) -> list[Analyser]:
        """The analysers that may match a node of this name, in the order tried."""
        return [a for a in self._sorted if a.covers(node)]

    def need_payload(self, node: str) -> bool:
        """Whether deciding needs an item of the node (an analyser looks at the
        namespace of items)."""
        return any(a.namespace for a in self.candidates(node))

    async def analyse(
        self, client: Client, service: jabber_jid.JID, node: str,
        item: domish.Element | None, metadata: dict[str, Any] | None,
        sample: Sampler,
    ) -> dict[str, Any] | None:
        """The analyse of the first analyser matching the node; ``None`` if none does.

        ``sample`` fetches an item and the metadata of the node when neither is given
        (and only if an analyser could need them).
        """
        candidates = self.candidates(node)
        if not candidates:
            return None
        if item is None and metadata is None and any(a.namespace for a in candidates):
            item, metadata = await sample()
        namespace = payload_namespace(item)
        if namespace is None:
            namespace = metadata_type(metadata)
        for analyser in candidates:
            if analyser.namespace and analyser.namespace != namespace:
                continue
            analyse = {
                "service": service, "node": node, "namespace": namespace,
                "analyser": analyser.name, "type": analyser.type,
                "subtype": analyser.subtype, "to_sync": analyser.to_sync,
                "item": item, "metadata": metadata,
            }
            if analyser.match_cb is not None:
                try:
                    accepted = await maybe_async_call(analyser.match_cb, client, analyse)
                except Exception:
                    log.failure("analyser {name}: match_cb failed", name=analyser.name)
                    continue
                if accepted is False:
                    continue
            return analyse
        return None


def payload_namespace(item: domish.Element | None) -> str | None:
    """The namespace of an item's payload (its first child element)."""
    if item is None:
        return None
    for child in item.elements():
        return child.uri
    return None


def metadata_type(metadata: dict[str, Any] | None) -> str | None:
    """The payload type a node's metadata announce (``pubsub#type``)."""
    return ((metadata or {}).get("meta_data") or {}).get("pubsub#type") or None
