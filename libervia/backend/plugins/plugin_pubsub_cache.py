"""Transparent pubsub cache.

When a pubsub get-items request is made (``XEP-0060_get_items`` trigger), the cache
decides whether the node is, or must be, cached:

* a node never seen is *analysed*: its metadata and one item are fetched, and the
  registered analysers (:meth:`PubsubCache.register_analyser`) are tried in their
  ``order``; the first that matches gives the node its analyser name, type and subtype;
* if that analyser says ``to_sync``, the node is *synchronised* in the background:
  the profile subscribes to it, every item is fetched (by RSM pages where the service
  pages), and stored as raw XML, with the data the analyser's ``parser`` extracts;
* once synchronised (state ``COMPLETED``) and verified since the profile connected,
  get-items requests on the node are answered from the database, with the semantics
  of a service (max items, item ids, RSM pages, order), and a ``cached`` flag.

Everything else (no analyser, ``to_sync`` false, a sync in progress or failed, a node
not checked since the connection) goes to the service, as if there were no cache.

Services differ in what they answer (see the developer documentation): some page with
RSM, some ignore it and answer the whole node; some keep a re-published item at its
place, some move it to the end.  The cache learns these *traits* of each service
(from the answers it gets while synchronising, and from the software name the service
gives, by XEP-0092 or its service discovery identity) and answers as that service
would.  Items a service drops without telling (Prosody, beyond a node's
``max_items``) are found by listing the node's item ids after new items.

The cache follows the service through the events it sends (new and updated items,
retractions, purge, node deletion, configuration changes).  Events are lost while a
profile is disconnected (or the backend stopped), so when a profile connects, every
synchronised node of that profile is compared with the service before it is served
again, and refreshed where they differ.

Settings (section ``[plugin PUBSUB_CACHE]``): ``max_items_per_node``, ``page_size``,
``parser_timeout``, ``sync_concurrency``.
"""

import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.internet import defer, task
from twisted.internet.error import ConnectionClosed
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from libervia.backend.core.async_utils import maybe_async_call
from libervia.backend.core.config import declare, parse_int
from libervia.backend.core.constants import C
from libervia.backend.core.exceptions import BackendError, ConflictError, NotFound
from libervia.backend.core.log import getLogger
from libervia.backend.core.xml_tools import XMLError, parse_xml
from libervia.backend.memory.sqla_mapping import SyncState
from libervia.backend.memory.storage import StorageError
from libervia.backend.plugins.plugin_xep_0059 import RSMRequest
from libervia.backend.plugins.plugin_xep_0060 import (
    NS_DISCO_INFO,
    NS_ORDER_BY,
    NS_PUBSUB,
    IQRequest,
    ItemNotFound,
    ItemsResult,
    PubsubError,
    check_node,
)

log = getLogger(__name__)

IMPORT_NAME = "PUBSUB_CACHE"
SECTION = f"plugin {IMPORT_NAME}"

PLUGIN_INFO = {
    "name": "Pubsub cache",
    "import_name": IMPORT_NAME,
    "type": C.PLUG_TYPE_MISC,
    "modes": [C.PLUG_MODE_CLIENT],
    "protocols": [],
    "dependencies": ["XEP-0059", "XEP-0060"],
    "recommendations": [],
    "main": "PubsubCache",
    "handler": False,
    "description": "Keeps pubsub nodes in the database and answers from there.",
}


def _positive(value: str) -> int:
    number = parse_int(value)
    if number <= 0:
        raise ValueError("expected a positive integer")
    return number


declare(SECTION, "max_items_per_node", _positive, 10000,
        "Largest node synchronised: a node with more items is not cached (the service "
        "is always asked for it).")
declare(SECTION, "page_size", _positive, 100,
        "Items asked per request while synchronising a node (services that page with "
        "RSM answer this many at a time).")
declare(SECTION, "parser_timeout", _positive, 10,
        "Seconds an analyser's parser may take for one item; past that the item is "
        "cached without parsed data.")
declare(SECTION, "sync_concurrency", _positive, 2,
        "Nodes synchronised (or verified) at the same time, per backend.")

#: keys an analyser may have
ANALYSER_KEYS = {"name", "type", "subtype", "node", "namespace", "order", "to_sync",
                 "parser", "match_cb"}

# sync states as the API shows them
STATE_NAMES = {None: "none", SyncState.IN_PROGRESS: "in_progress",
               SyncState.COMPLETED: "completed", SyncState.ERROR: "error",
               SyncState.NO_SYNC: "no_sync"}


NS_VERSION = "jabber:iq:version"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"

#: seconds to wait for a service's software name or features
TRAITS_TIMEOUT = 10
#: longest wait between two checks of a database that could not store an event
MISSED_CHECK_MAX_DELAY = 10.0

#: server software whose behaviour is known (see DEFAULT_TRAITS and the documentation)
KNOWN_SOFTWARE = ("prosody", "ejabberd")

#: traits of a service whose software is unknown (the most common behaviour)
DEFAULT_TRAITS = {"software": None, "rsm": True, "order_by": False,
                  "republish_moves": False, "ids_in_request_order": False,
                  "silent_trim": False, "id_cursors": True}


class CacheError(BackendError):
    """A cache operation can't be done; the message says why."""


class InvalidAnalyser(CacheError, ValueError):
    """An analyser given to :meth:`PubsubCache.register_analyser` is invalid."""


def _payload_namespace(item: domish.Element | None) -> str | None:
    if item is None:
        return None
    for child in item.elements():
        return child.uri
    return None


def _serialise(item: domish.Element, node: str) -> str:
    """The XML text of ``item``, as stored.

    :raise CacheError: the item is nested too deeply for the serialiser (recursive)
    """
    try:
        return item.toXml()
    except RecursionError:
        raise CacheError(
            f"item {item.getAttribute('id')!r} of node {node!r} is nested too deeply "
            "to be cached"
        ) from None


def _service_key(service: jabber_jid.JID) -> str:
    return service.userhost() if service.user else service.host


class PubsubCache:
    """The pubsub cache plugin; ``host.plugins["PUBSUB_CACHE"]``."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self.storage = host.storage
        self._xep_0060 = host.plugins["XEP-0060"]
        section = host.config.plugin_section(IMPORT_NAME)
        self.max_items_per_node = section.get_int("max_items_per_node")
        self.page_size = section.get_int("page_size")
        self.parser_timeout = section.get_int("parser_timeout")
        self.analysers: dict[str, dict[str, Any]] = {}
        self._sorted_analysers: list[dict[str, Any]] = []
        #: node ids whose items were compared with the service since the connection
        #: (or synchronised since): only those are served
        self._verified: set[int] = set()
        #: traits of services, by domain (see DEFAULT_TRAITS)
        self._traits: dict[str, defer.Deferred] = {}
        #: last time stamp given to a cached item, so that stamps always grow
        self._last_stamp = datetime.min.replace(tzinfo=UTC)
        #: node ids being synchronised, with the events received meanwhile
        self._syncing: dict[int, list[tuple[str, Any]]] = {}
        self._node_locks: dict[int, defer.DeferredLock] = {}
        self._sync_semaphore = defer.DeferredSemaphore(section.get_int("sync_concurrency"))
        self._analysing: dict[tuple[str, str, str], defer.Deferred] = {}
        #: Deferreds of background work, so that tests and shutdown can wait for them
        self._background: set[defer.Deferred] = set()
        #: (service, node) whose events could not be stored: not served until checked
        self._missed: set[tuple[str, str]] = set()
        trigger = host.trigger
        # high priority: the cache answers before anything else asks the service
        trigger.add("XEP-0060_get_items", self._on_get_items, priority=500)
        trigger.add("XEP-0060_items", self._storing_event(self._on_items_event))
        trigger.add("XEP-0060_retract", self._storing_event(self._on_retract_event))
        trigger.add("XEP-0060_purge", self._storing_event(self._on_purge_event))
        trigger.add("XEP-0060_delete", self._storing_event(self._on_delete_event))
        trigger.add("XEP-0060_configuration",
                    self._storing_event(self._on_configuration_event))
        self._register_bridge()

    # analysers

    def register_analyser(self, analyser: dict[str, Any]) -> None:
        """Register an analyser, which decides how a kind of node is cached.

        An analyser is a dict:

        ``name`` (str, required)
            unique name, stored with each node it matched;
        ``type`` (str, required) and ``subtype`` (str, optional)
            what the node holds (e.g. ``"blog"``), stored with the node and usable to
            filter searches;
        ``node`` (str) and/or ``namespace`` (str), at least one
            the node name must start with ``node``; the payload of the node's items
            (its first child element) must be in ``namespace``.  When both are given,
            both must match;
        ``order`` (int, default 0)
            analysers are tried by increasing order (by name for equal orders), the
            first matching one wins;
        ``to_sync`` (bool, default False)
            synchronise matching nodes: keep all their items in the cache and answer
            from it;
        ``parser`` (callable, optional)
            ``parser(client, item_elt, service, node)`` returning JSON-serialisable
            data extracted from an item (plain function, coroutine function or
            returning a Deferred); stored beside the item's XML, it is what searches
            on parsed data look at.  An exception or a time-out leaves the item
            without parsed data, with a log line;
        ``match_cb`` (callable, optional)
            ``match_cb(client, analyse)`` called when the node and namespace match;
            ``analyse`` is a dict describing the node (``service``, ``node``,
            ``namespace``, ``analyser``, ``type``, ``subtype``, ``to_sync``, ``item``
            (the sample item or None), ``metadata``); the callback may change ``type``,
            ``subtype`` and ``to_sync`` in it, and returns ``False`` to refuse the
            match (the next analyser is then tried).

        :raise InvalidAnalyser: missing or wrongly typed key, unknown key, or a name
            already registered
        """
        if not isinstance(analyser, dict):
            raise InvalidAnalyser("an analyser must be a dict")
        unknown = set(analyser) - ANALYSER_KEYS
        if unknown:
            raise InvalidAnalyser(f"unknown analyser key(s): {', '.join(sorted(unknown))}")
        name = analyser.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidAnalyser("an analyser needs a 'name' (non-empty string)")
        if name in self.analysers:
            raise InvalidAnalyser(f"an analyser named {name!r} is already registered")
        if not isinstance(analyser.get("type"), str) or not analyser["type"]:
            raise InvalidAnalyser(f"analyser {name!r} needs a 'type' (non-empty string)")
        for key in ("subtype", "node", "namespace"):
            if key in analyser and analyser[key] is not None and (
                not isinstance(analyser[key], str) or not analyser[key]
            ):
                raise InvalidAnalyser(f"analyser {name!r}: {key!r} must be a non-empty string")
        if not analyser.get("node") and not analyser.get("namespace"):
            raise InvalidAnalyser(f"analyser {name!r} needs 'node' and/or 'namespace'")
        order = analyser.get("order", 0)
        if isinstance(order, bool) or not isinstance(order, int):
            raise InvalidAnalyser(f"analyser {name!r}: 'order' must be an integer")
        to_sync = analyser.get("to_sync", False)
        if not isinstance(to_sync, bool):
            raise InvalidAnalyser(f"analyser {name!r}: 'to_sync' must be a boolean")
        for key in ("parser", "match_cb"):
            if analyser.get(key) is not None and not callable(analyser[key]):
                raise InvalidAnalyser(f"analyser {name!r}: {key!r} must be callable")
        normalised = {"subtype": None, "node": None, "namespace": None, "parser": None,
                      "match_cb": None} | dict(analyser) | {"order": order,
                                                            "to_sync": to_sync}
        self.analysers[name] = normalised
        self._sorted_analysers = sorted(
            self.analysers.values(), key=lambda a: (a["order"], a["name"])
        )
        log.debug("pubsub cache analyser {name} registered", name=name)

    async def analyse_node(
        self,
        client: Any,
        service: jabber_jid.JID,
        node: str,
        item: domish.Element | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Find the analyser of a node; ``None`` if none matches.

        The node's metadata and one item are fetched when neither is given (and only
        if an analyser could need them).
        """
        candidates = self._candidates(node)
        if not candidates:
            return None
        if item is None and metadata is None and any(a["namespace"] for a in candidates):
            item, metadata = await self._sample(client, service, node)
        namespace = _payload_namespace(item)
        if namespace is None:
            namespace = _metadata_type(metadata)
        for analyser in candidates:
            if analyser["namespace"] and analyser["namespace"] != namespace:
                continue
            analyse = {
                "service": service, "node": node, "namespace": namespace,
                "analyser": analyser["name"], "type": analyser["type"],
                "subtype": analyser["subtype"], "to_sync": analyser["to_sync"],
                "item": item, "metadata": metadata,
            }
            if analyser["match_cb"] is not None:
                try:
                    accepted = await maybe_async_call(analyser["match_cb"], client, analyse)
                except Exception:
                    log.failure("analyser {name}: match_cb failed", name=analyser["name"])
                    continue
                if accepted is False:
                    continue
            return analyse
        return None

    def _candidates(self, node: str) -> list[dict[str, Any]]:
        return [a for a in self._sorted_analysers
                if a["node"] is None or node.startswith(a["node"])]

    async def _sample(self, client: Any, service: jabber_jid.JID, node: str
                      ) -> tuple[domish.Element | None, dict[str, Any]]:
        """One item (the last) and the metadata of a node, as far as they can be had."""
        item = await self._sample_item(client, service, node)
        metadata = await self._metadata(client, service, node)
        return item, metadata or {}

    async def _sample_item(self, client: Any, service: jabber_jid.JID, node: str
                           ) -> domish.Element | None:
        try:
            result = await self._xep_0060.get_items_from_service(client, service, node,
                                                                 max_items=1)
        except PubsubError as e:
            log.debug("no sample item for {node}: {error}", node=node, error=e)
            return None
        return result.items[-1] if result.items else None

    async def _metadata(self, client: Any, service: jabber_jid.JID, node: str
                        ) -> dict[str, Any] | None:
        try:
            return await self._xep_0060.get_node_metadata(client, service, node)
        except PubsubError:
            return None

    # serving get-items requests

    def _profile(self, client: Any) -> str:
        return client.profile.name

    async def _on_get_items(
        self, client: Any, service: jabber_jid.JID, node: str, max_items: int | None,
        item_ids: list[str] | None, rsm_request: RSMRequest | None,
        order_by: str | None, extra: dict[str, Any],
    ) -> tuple[bool, Any]:
        if not extra.get("use_cache", True):
            return True, None
        profile = self._profile(client)
        service_key = _service_key(service)
        try:
            pubsub_node = await self.storage.pubsub.get_pubsub_node(profile, service_key, node)
            if pubsub_node is None:
                # unknown node: decide in the background, the service answers this time
                self._spawn(self._analyse_and_sync(client, service, node))
                return True, None
            if pubsub_node.sync_state is None and pubsub_node.analyser is not None:
                # analysed, but its synchronisation never started (backend stopped)
                self._spawn(self._sync_in_background(client, service, node))
                return True, None
            if not self._servable(pubsub_node):
                translated = await self._service_cursor(pubsub_node, rsm_request)
                if translated is None:
                    return True, None
                result = await self._xep_0060.get_items_from_service(
                    client, service, node, max_items, item_ids, translated, order_by)
                return False, result
            result = await self.get_cached_items(
                pubsub_node, service, max_items, item_ids, rsm_request, order_by
            )
        except NotFound:
            # an RSM cursor we don't know: let the service deal with it
            return True, None
        except Exception:
            # the cache is an optimisation: whatever goes wrong, the service answers
            log.failure("pubsub cache can't answer for node {node}, asking the service",
                        node=node)
            return True, None
        return False, result

    async def _service_cursor(self, pubsub_node: Any, rsm_request: RSMRequest | None
                              ) -> RSMRequest | None:
        """A cursor the cache gave, turned into a request the service understands.

        The cache's RSM cursors are item ids; a caller paging with them goes on doing
        so when the node stops being served (while it is checked after a connection,
        for instance).  A service whose cursors are something else (ejabberd: time
        stamps) would answer nothing: the cursor becomes a position (RSM ``index``)
        in the cached node.  ``None`` when there is nothing to translate.
        """
        if (rsm_request is None or not (rsm_request.after or rsm_request.before)
                or pubsub_node.sync_state is not SyncState.COMPLETED):
            return None
        traits = node_traits(pubsub_node)
        if not traits["rsm"] or traits["id_cursors"]:
            return None
        order = "modification" if traits["republish_moves"] else "creation"
        try:
            if rsm_request.after:
                following, page = await self.storage.pubsub.get_items(
                    pubsub_node.id, max_items=1, after=rsm_request.after, order_by=order)
                index = page.index if following else page.count
                return RSMRequest(max=rsm_request.max, index=index)
            preceding, page = await self.storage.pubsub.get_items(
                pubsub_node.id, max_items=rsm_request.max, before=rsm_request.before,
                order_by=order)
        except NotFound:
            return None  # not one of ours: the service's own cursor
        return RSMRequest(max=len(preceding), index=page.index or 0)

    def _servable(self, pubsub_node: Any) -> bool:
        return (pubsub_node.sync_state is SyncState.COMPLETED
                and pubsub_node.id in self._verified
                and pubsub_node.id not in self._syncing
                and (pubsub_node.service, pubsub_node.name) not in self._missed)

    async def get_cached_items(
        self, pubsub_node: Any, service: jabber_jid.JID, max_items: int | None = None,
        item_ids: list[str] | None = None, rsm_request: RSMRequest | None = None,
        order_by: str | None = None,
    ) -> ItemsResult:
        """Answer a get-items request from the database, as the service would.

        The node's service traits (stored with the node when it was synchronised)
        decide: the order of the items (by creation, or by last publication for
        services moving a re-published item to the end; ``order_by`` only if the
        service supports it), whether RSM is honoured (a service ignoring it answers
        the whole node, without RSM data) and the order of items asked by id.

        :raise NotFound: an RSM ``after`` or ``before`` cursor unknown to the cache
        """
        traits = node_traits(pubsub_node)
        native = "modification" if traits["republish_moves"] else "creation"
        order = (order_by or native) if traits["order_by"] else native
        if not traits["rsm"]:
            rsm_request = None
        kwargs: dict[str, Any] = {"order_by": order}
        if item_ids:
            kwargs["item_ids"] = item_ids
        if rsm_request is not None:
            kwargs["max_items"] = rsm_request.max
            if rsm_request.after is not None:
                kwargs["after"] = rsm_request.after
            elif rsm_request.before is not None:
                kwargs["before"] = rsm_request.before
            elif rsm_request.index is not None:
                kwargs["index"] = rsm_request.index
        elif max_items is not None:
            # the last N published items, oldest first, as services answer
            kwargs["max_items"] = max_items
            kwargs["before"] = ""
        items, page = await self.storage.pubsub.get_items(pubsub_node.id, **kwargs)
        if item_ids and traits["ids_in_request_order"]:
            by_name = {item.name: item for item in items}
            items = [by_name.pop(i) for i in item_ids if i in by_name]
        result = ItemsResult(service.full(), pubsub_node.name, cached=True)
        for item in items:
            try:
                result.items.append(parse_xml(item.data))
            except XMLError:
                log.error("cached item {item} of {node} is unreadable, skipping it",
                          item=item.name, node=pubsub_node.name)
        if traits["rsm"] and (rsm_request is not None or max_items is not None) and (
            not item_ids
        ):
            result.rsm = {k: v for k, v in (("first", page.first), ("last", page.last),
                                            ("index", page.index), ("count", page.count))
                          if v is not None}
        return result

    # analysis and synchronisation

    def _spawn(self, coroutine: Any) -> defer.Deferred:
        d = defer.ensureDeferred(coroutine)
        self._background.add(d)

        def done(result: Any) -> Any:
            self._background.discard(d)
            return result

        d.addBoth(done)
        d.addErrback(lambda f: log.failure("pubsub cache background task failed", f))
        return d

    async def wait_background(self) -> None:
        """Wait until every background analysis and synchronisation has ended."""
        while self._background:
            await defer.DeferredList(list(self._background), consumeErrors=True)

    def _lock(self, node_id: int) -> defer.DeferredLock:
        lock = self._node_locks.get(node_id)
        if lock is None:
            lock = self._node_locks[node_id] = defer.DeferredLock()
        return lock

    async def _analyse_and_sync(self, client: Any, service: jabber_jid.JID, node: str
                                ) -> None:
        key = (self._profile(client), _service_key(service), node)
        pending = self._analysing.get(key)
        if pending is not None:
            # another request is analysing the node: its result will do
            await defer.DeferredList([pending], consumeErrors=True)
            return
        d = defer.ensureDeferred(self._analyse_and_record(client, service, node))
        self._analysing[key] = d
        try:
            pubsub_node = await d
        finally:
            del self._analysing[key]
        if pubsub_node is not None and pubsub_node.sync_state is None:
            await self._sync_in_background(client, service, node)

    async def _sync_in_background(self, client: Any, service: jabber_jid.JID, node: str
                                  ) -> None:
        try:
            await self.synchronise(client, service, node)
        except ConflictError:
            pass  # another request started it meanwhile

    async def _analyse_and_record(self, client: Any, service: jabber_jid.JID, node: str
                                  ) -> Any:
        """Analyse a node and record the result; ``None`` if it can't be decided yet."""
        profile = self._profile(client)
        service_key = _service_key(service)
        existing = await self.storage.pubsub.get_pubsub_node(profile, service_key, node)
        if existing is not None:
            return existing
        item: domish.Element | None = None
        metadata: dict[str, Any] = {}
        needs_payload = any(a["namespace"] for a in self._candidates(node))
        if needs_payload:
            item, metadata = await self._sample(client, service, node)
        analyse = await self.analyse_node(client, service, node, item, metadata)
        if analyse is None:
            if needs_payload and item is None and not _metadata_type(metadata):
                # an empty node says nothing of what it will hold: decide once it
                # has items (the service answers meanwhile)
                log.debug("node {node} is empty: its analysis waits", node=node)
                return None
            return await self.storage.pubsub.set_pubsub_node(
                profile, service_key, node, analyser=None, sync_state=SyncState.NO_SYNC)
        return await self.storage.pubsub.set_pubsub_node(
            profile, service_key, node,
            analyser=analyse["analyser"], type_=analyse["type"],
            subtype=analyse["subtype"],
            sync_state=None if analyse["to_sync"] else SyncState.NO_SYNC,
        )

    async def synchronise(self, client: Any, service: jabber_jid.JID, node: str,
                          force: bool = False) -> dict[str, Any]:
        """Synchronise a node now: subscribe, fetch every item, store them.

        :param force: also for a node already synchronised (its items are replaced),
            or whose analysis said not to synchronise it
        :return: the node's state afterwards (see :meth:`node_state`)
        :raise ConflictError: the node is being synchronised already
        :raise CacheError: the node can't be analysed (it is empty)
        """
        profile = self._profile(client)
        service_key = _service_key(service)
        pubsub_node = await self.storage.pubsub.get_pubsub_node(profile, service_key, node)
        if pubsub_node is None:
            pubsub_node = await self._analyse_and_record(client, service, node)
            if pubsub_node is None:
                raise CacheError(f"node {node!r} of {service_key} is empty: nothing "
                                 "tells what it holds yet, try again once it has items")
        if pubsub_node.sync_state is SyncState.NO_SYNC and not force:
            return self.node_state(pubsub_node)
        if pubsub_node.id in self._syncing:
            raise ConflictError(f"node {node!r} of {service_key} is being synchronised")
        await self._buffering_events(
            client, service, pubsub_node,
            lambda: self._sync_semaphore.run(
                lambda: defer.ensureDeferred(self._sync(client, service, pubsub_node))),
        )
        return self.node_state(
            await self.storage.pubsub.get_pubsub_node(profile, service_key, node))

    async def _buffering_events(self, client: Any, service: jabber_jid.JID,
                                pubsub_node: Any, work: Callable[[], Any]) -> None:
        """Run ``work`` (which rewrites the node's items) while events wait.

        Events of the node received meanwhile are kept, then applied in the order they
        came once the items are written, so that nothing the service sent during the
        work is lost.  Events coming while those are applied wait their turn too.
        """
        pending: list[tuple[str, Any]] = []
        self._syncing[pubsub_node.id] = pending
        try:
            await work()
        finally:
            try:
                await self._replay(client, service, pubsub_node, pending)
            finally:
                del self._syncing[pubsub_node.id]

    async def _replay(self, client: Any, service: jabber_jid.JID, pubsub_node: Any,
                      pending: list[tuple[str, Any]]) -> None:
        """Apply the events received while the node was being synchronised."""
        if not pending:
            return
        fresh = await self.storage.pubsub.get_pubsub_node(
            self._profile(client), _service_key(service), pubsub_node.name)
        if fresh is None or fresh.id != pubsub_node.id:
            pending.clear()
            return
        if fresh.sync_state is not SyncState.COMPLETED:
            # the work failed: the node is not served, its item events don't matter,
            # but a deletion or a new configuration does
            node_events = [e for e in pending if e[0] in ("delete", "configuration")]
            pending[:] = node_events[-1:]
        while pending:
            kind, data = pending.pop(0)
            if kind == "items":
                await self._upsert(client, service, fresh, data)
            elif kind == "retract":
                await self._delete_items(fresh, data)
            elif kind == "purge":
                await self._delete_items(fresh, None)
            elif kind in ("delete", "configuration"):
                pending.clear()
                await self._forget(client, fresh)
                if kind == "configuration":
                    self._spawn(self._analyse_and_sync(client, service, fresh.name))

    async def _sync(self, client: Any, service: jabber_jid.JID, pubsub_node: Any) -> None:
        node = pubsub_node.name
        node_id = pubsub_node.id
        self._verified.discard(node_id)
        await self.storage.pubsub.update_pubsub_node_sync_state(
            node_id, SyncState.IN_PROGRESS, items_done=0)
        self._emit_progress(client, pubsub_node, SyncState.IN_PROGRESS, 0, None)
        started = self._stamp()
        try:
            traits = dict(await self._service_traits(client, service))
            if not pubsub_node.subscribed:
                try:
                    await self._xep_0060.subscribe(client, service, node)
                    await self.storage.pubsub.set_pubsub_node(
                        self._profile(client), _service_key(service), node,
                        subscribed=True)
                except PubsubError as e:
                    # events won't come: the node can't be kept in sync
                    raise CacheError(f"can't subscribe to {node!r}: {e}") from None
            rows, learnt = await self._fetch_rows(client, service, pubsub_node)
            traits |= learnt
            await self._store_fetched(client, service, pubsub_node, rows, started, traits)
        except ItemNotFound:
            # deleted meanwhile: forgotten, it will be analysed again if asked for
            log.info("node {node} does not exist any more", node=node)
            await self._forget(client, pubsub_node)
            return
        except Exception as e:
            reason = str(e) if isinstance(e, BackendError) else f"{type(e).__name__}: {e}"
            if not getattr(client, "is_connected", True) or isinstance(e, ConnectionClosed):
                # interrupted (disconnection, backend stopping), not failed: the node
                # stays IN_PROGRESS and is synchronised again at the next connection.
                # The requests of a lost stream fail before the client knows it is
                # disconnected: their error tells it too
                log.info("synchronisation of node {node} interrupted ({reason}), it "
                         "will be done again", node=node, reason=reason)
                return
            log.error("synchronisation of node {node} failed: {reason}", node=node,
                      reason=reason)
            await self._give_up(client, service, pubsub_node, reason)
            return
        self._verified.add(node_id)
        log.info("node {node} of {service} synchronised ({count} items)", node=node,
                 service=service.full(), count=len(rows))

    async def _give_up(self, client: Any, service: jabber_jid.JID, pubsub_node: Any,
                       reason: str) -> None:
        """The node can't be kept equal to the service: ERROR, the service answers."""
        self._verified.discard(pubsub_node.id)
        try:
            await self.storage.pubsub.set_pubsub_node(
                self._profile(client), _service_key(service), pubsub_node.name,
                sync_state=SyncState.ERROR, extra={"error": reason})
        except Exception:
            log.failure("can't record the failed synchronisation of {node}",
                        node=pubsub_node.name)
        self._emit_progress(client, pubsub_node, SyncState.ERROR, 0, None)

    async def _fetch_pages(self, client: Any, service: jabber_jid.JID, pubsub_node: Any,
                           learnt: dict[str, bool], record_progress: bool
                           ) -> AsyncIterator[list[domish.Element]]:
        """Every item of the node, in the service's order, by RSM pages if it pages.

        The request for the next page is sent before a page is given: the service
        prepares it while the caller handles this one (a synchronisation would
        otherwise wait for the service, then the service for it, at every page).

        :param learnt: filled with the traits learnt from the answers: ``rsm`` (the
            service answered with RSM data; a service ignoring RSM answers the whole
            node at once) and ``id_cursors`` (its RSM cursors are item ids)
        :param record_progress: record the items fetched as the progress of the node's
            synchronisation (a verification leaves the node's state alone)
        """
        seen: set[str] = set()
        expected: int | None = None
        pending: defer.Deferred | None = self._request_page(
            client, service, pubsub_node, RSMRequest(max=self.page_size))
        try:
            while pending is not None:
                result = await pending
                pending = None
                if not learnt:
                    learnt["rsm"] = bool(result.rsm)
                    learnt["id_cursors"] = not result.items or result.rsm.get(
                        "first", result.items[0].getAttribute("id")
                    ) == result.items[0].getAttribute("id")
                new = [i for i in result.items
                       if i.getAttribute("id") and i.getAttribute("id") not in seen]
                if len(new) < len(result.items):
                    log.debug("{n} item(s) of {node} without id or already seen, skipped",
                              n=len(result.items) - len(new), node=pubsub_node.name)
                seen.update(i["id"] for i in new)
                count = result.rsm.get("count")
                if count is not None:
                    expected = count
                if max(expected or 0, len(seen)) > self.max_items_per_node:
                    raise CacheError(
                        f"node {pubsub_node.name!r} has more than "
                        f"{self.max_items_per_node} items (max_items_per_node): it is "
                        "not cached"
                    )
                if record_progress:
                    await self.storage.pubsub.update_pubsub_node_sync_state(
                        pubsub_node.id, SyncState.IN_PROGRESS, items_done=len(seen),
                        items_expected=expected if expected is not None else None)
                    self._emit_progress(client, pubsub_node, SyncState.IN_PROGRESS,
                                        len(seen), expected)
                last = result.rsm.get("last")
                # no RSM: the service does not page (it answered everything)
                done = (not result.rsm or not new or last is None
                        or (expected is not None and len(seen) >= expected))
                if not done:
                    pending = self._request_page(
                        client, service, pubsub_node,
                        RSMRequest(max=self.page_size, after=last))
                yield new
        finally:
            if pending is not None:
                # the caller stopped early: nobody waits for that page any more
                pending.addErrback(lambda __: None)

    def _request_page(self, client: Any, service: jabber_jid.JID, pubsub_node: Any,
                      request: RSMRequest) -> defer.Deferred:
        return defer.ensureDeferred(self._xep_0060.get_items_from_service(
            client, service, pubsub_node.name, rsm_request=request))

    async def _fetch_all(self, client: Any, service: jabber_jid.JID, pubsub_node: Any
                         ) -> tuple[list[domish.Element], dict[str, bool]]:
        """Every item of the node (see :meth:`_fetch_pages`), and the traits learnt."""
        items: list[domish.Element] = []
        learnt: dict[str, bool] = {}
        async with aclosing(self._fetch_pages(client, service, pubsub_node, learnt,
                                              record_progress=False)) as pages:
            async for page in pages:
                items.extend(page)
        return items, learnt

    async def _fetch_rows(self, client: Any, service: jabber_jid.JID, pubsub_node: Any
                          ) -> tuple[list[dict[str, Any]], dict[str, bool]]:
        """Every item of the node as rows to store, recording the sync's progress.

        Each page is serialised and parsed while the service prepares the next one.
        """
        rows: list[dict[str, Any]] = []
        learnt: dict[str, bool] = {}
        async with aclosing(self._fetch_pages(client, service, pubsub_node, learnt,
                                              record_progress=True)) as pages:
            async for page in pages:
                for item in page:
                    rows.append(await self._row(client, service, pubsub_node, item))
        return rows, learnt

    async def _row(self, client: Any, service: jabber_jid.JID, pubsub_node: Any,
                   item: domish.Element) -> dict[str, Any]:
        """A fetched item as stored, time stamps apart: its XML and parsed data."""
        return {"name": item["id"], "data": _serialise(item, pubsub_node.name),
                "parsed": await self._parse(client, pubsub_node, item, service)}

    async def _store_fetched(self, client: Any, service: jabber_jid.JID, pubsub_node: Any,
                             rows: list[dict[str, Any]], started: datetime,
                             traits: dict[str, Any]) -> None:
        """Replace the node's items by ``rows`` (see :meth:`_row`) at once; the node
        becomes COMPLETED."""
        # the service's order is kept as time stamps just before the sync started, so
        # that items arriving later (events) come after them
        count = len(rows)
        for position, row in enumerate(rows):
            row["created"] = row["updated"] = started - timedelta(
                microseconds=count - position)
        async with _locked(self._lock(pubsub_node.id)):
            # the traits first: a node is never COMPLETED without them
            await self.storage.pubsub.set_pubsub_node(
                self._profile(client), _service_key(service), pubsub_node.name,
                extra={"traits": traits})
            pubsub_node.extra = {"traits": traits}
            await self.storage.pubsub.replace_pubsub_items(pubsub_node.id, rows,
                                                           sync_state=SyncState.COMPLETED)
        self._emit_progress(client, pubsub_node, SyncState.COMPLETED, count, count)

    def _stamp(self) -> datetime:
        """Now, but always later than the previous stamp given (order of events)."""
        now = datetime.now(UTC)
        if now <= self._last_stamp:
            now = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = now
        return now

    # service traits

    async def _service_traits(self, client: Any, service: jabber_jid.JID
                              ) -> dict[str, Any]:
        """What the service's software does differently (see DEFAULT_TRAITS).

        Asked once per service domain: its software name (XEP-0092, asked to the
        domain, then to its parent domain for a component) and whether it supports
        XEP-0413 ordering (service discovery).  Whether it pages with RSM is learnt
        from the answers while synchronising.
        """
        known = self._traits.get(service.host)
        if known is not None:
            return known
        software = await self._software(client, service.host)
        if software is None and "." in service.host:
            software = await self._software(client, service.host.split(".", 1)[1])
        features, names = await self._disco_info(client, service)
        if software is None:
            # servers not answering XEP-0092 (Prosody without mod_version) still name
            # themselves in their service discovery identities
            if service.user or service.resource:
                names += (await self._disco_info(client, jabber_jid.JID(service.host)))[1]
            software = next((n for n in names if _known_software(n)), None)
        order_by = NS_ORDER_BY in features
        moves = software is not None and "prosody" in software.lower()
        traits = DEFAULT_TRAITS | {"software": software, "order_by": order_by,
                                   "republish_moves": moves,
                                   "ids_in_request_order": moves,
                                   "silent_trim": moves}
        self._traits[service.host] = traits
        log.debug("traits of {service}: {traits}", service=service.host, traits=traits)
        return traits

    async def _software(self, client: Any, domain: str) -> str | None:
        try:
            iq = await client.request(IQRequest(
                jabber_jid.JID(domain), "get", domish.Element((NS_VERSION, "query")),
                timeout=TRAITS_TIMEOUT))
        except Exception as e:
            log.debug("no software version from {domain}: {error}", domain=domain,
                      error=e)
            return None
        query = next(iq.elements(NS_VERSION, "query"), None)
        name = next(query.elements(NS_VERSION, "name"), None) if query else None
        return str(name).strip() or None if name is not None else None

    async def _disco_info(self, client: Any, service: jabber_jid.JID
                          ) -> tuple[list[str], list[str]]:
        """Features and identity names of an entity (empty if it does not answer)."""
        try:
            iq = await client.request(IQRequest(
                service, "get", domish.Element((NS_DISCO_INFO, "query")),
                timeout=TRAITS_TIMEOUT))
        except Exception:
            return [], []
        query = next(iq.elements(NS_DISCO_INFO, "query"), None)
        if query is None:
            return [], []
        features = [f.getAttribute("var") for f in query.elements(NS_DISCO_INFO, "feature")]
        names = [i.getAttribute("name") for i in query.elements(NS_DISCO_INFO, "identity")
                 if i.getAttribute("name")]
        return features, names

    async def _parse(self, client: Any, pubsub_node: Any, item: domish.Element,
                     service: jabber_jid.JID) -> Any:
        analyser = self.analysers.get(pubsub_node.analyser or "")
        if analyser is None or analyser["parser"] is None:
            return None
        d = maybe_async_call(analyser["parser"], client, item, service, pubsub_node.name)
        d.addTimeout(self.parser_timeout, self.host.reactor)
        try:
            parsed = await d
            # checked here: a value the database refuses would lose the whole batch
            encoded = json.dumps(parsed, allow_nan=False)
            if "\\u0000" in encoded:
                raise ValueError("NUL characters can't be stored (PostgreSQL JSONB)")
            return parsed
        except defer.TimeoutError:
            log.warn("analyser {name}: parser timed out on item {item} of {node}",
                     name=analyser["name"], item=item.getAttribute("id"),
                     node=pubsub_node.name)
        except Exception:
            log.failure("analyser {name}: parser failed on item {item} of {node}",
                        name=analyser["name"], item=item.getAttribute("id"),
                        node=pubsub_node.name)
        return None

    def _emit_progress(self, client: Any, pubsub_node: Any, state: SyncState | None,
                       done: int, expected: int | None) -> None:
        bridge = getattr(self.host, "bridge", None)
        if bridge is not None and "cache_sync_progress" in bridge.signals:
            bridge.emit_signal(
                "cache_sync_progress", profile=self._profile(client),
                service=pubsub_node.service, node=pubsub_node.name,
                state=STATE_NAMES[state], done=done, expected=expected)

    @staticmethod
    def node_state(pubsub_node: Any) -> dict[str, Any]:
        return {
            "service": pubsub_node.service, "node": pubsub_node.name,
            "analyser": pubsub_node.analyser, "type": pubsub_node.type_,
            "subtype": pubsub_node.subtype,
            "state": STATE_NAMES.get(pubsub_node.sync_state, "none"),
            "items_done": pubsub_node.sync_items_done,
            "items_expected": pubsub_node.sync_items_expected,
            "subscribed": pubsub_node.subscribed,
            "error": (pubsub_node.extra or {}).get("error"),
        }

    # events

    def _storing_event(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """``handler`` of a node's events, whose storage failures lose no event.

        An event the database can't take (it is down, or busy for too long) is lost:
        the node is not served any more, and is checked against the service once the
        database answers again.
        """
        async def on_event(client: Any, service: jabber_jid.JID, node: str,
                           *args: Any) -> bool:
            try:
                return await handler(client, service, node, *args)
            except StorageError as e:
                key = (_service_key(service), node)
                log.warn("an event of node {node} could not be stored ({error}); the "
                         "node is checked against the service once the database "
                         "answers", node=node, error=e)
                if key not in self._missed:
                    self._missed.add(key)
                    self._spawn(self._check_missed(client, service, node))
                return True

        return on_event

    async def _check_missed(self, client: Any, service: jabber_jid.JID, node: str
                            ) -> None:
        """Wait for the database, then verify a node whose events were lost."""
        key = (_service_key(service), node)
        delay = 0.5
        try:
            while True:
                try:
                    pubsub_node = await self.storage.pubsub.get_pubsub_node(
                        self._profile(client), key[0], node)
                    break
                except StorageError:
                    await task.deferLater(self.host.reactor, delay, lambda: None)
                    delay = min(delay * 2, MISSED_CHECK_MAX_DELAY)
            if pubsub_node is None or pubsub_node.sync_state is not SyncState.COMPLETED:
                return
            self._verified.discard(pubsub_node.id)
            await self._verify(client, service, pubsub_node)
        finally:
            self._missed.discard(key)

    async def _cached_node(self, client: Any, service: jabber_jid.JID, node: str) -> Any:
        pubsub_node = await self.storage.pubsub.get_pubsub_node(
            self._profile(client), _service_key(service), node)
        if pubsub_node is None or pubsub_node.sync_state not in (
            SyncState.COMPLETED, SyncState.IN_PROGRESS
        ):
            return None
        return pubsub_node

    def _defer_if_syncing(self, pubsub_node: Any, kind: str, data: Any) -> bool:
        pending = self._syncing.get(pubsub_node.id)
        if pending is None:
            return False
        pending.append((kind, data))
        return True

    async def _on_items_event(self, client: Any, service: jabber_jid.JID, node: str,
                              items: list[domish.Element], message: domish.Element
                              ) -> bool:
        pubsub_node = await self._cached_node(client, service, node)
        if pubsub_node is None:
            return True
        with_payload = [i for i in items if i.getAttribute("id") and _has_payload(i)]
        without = [i.getAttribute("id") for i in items
                   if i.getAttribute("id") and not _has_payload(i)]
        if len(with_payload) + len(without) < len(items):
            log.warn("ignoring {n} item(s) without id in an event of {node}",
                     n=len(items) - len(with_payload) - len(without), node=node)
        converted = [_as_pubsub_item(i) for i in with_payload]
        if without:
            # notification without payload: fetch the items it names
            try:
                fetched = await self._xep_0060.get_items_from_service(
                    client, service, node, item_ids=without)
            except PubsubError as e:
                log.warn("can't fetch notified items of {node}: {error}; the node will "
                         "be checked against the service", node=node, error=e)
                self._verified.discard(pubsub_node.id)
                self._spawn(self._verify(client, service, pubsub_node))
                return True
            wanted = set(without)
            converted += [i for i in fetched.items if i.getAttribute("id") in wanted]
        if not converted:
            return True
        if self._defer_if_syncing(pubsub_node, "items", converted):
            return True
        await self._upsert(client, service, pubsub_node, converted)
        return True

    async def _upsert(self, client: Any, service: jabber_jid.JID, pubsub_node: Any,
                      items: list[domish.Element]) -> None:
        rows = []
        refused: list[str] = []
        for item in items:
            try:
                data = _serialise(item, pubsub_node.name)
            except CacheError as e:
                refused.append(str(e))
                continue
            parsed = await self._parse(client, pubsub_node, item, service)
            stamp = self._stamp()
            # a new item gets this creation time; an existing one keeps its own (the
            # update time orders items of services moving re-published items)
            rows.append({"name": item["id"], "data": data, "parsed": parsed,
                         "updated": stamp, "created": stamp})
        if refused:
            # the cache would miss these items: it stops answering for the node
            reason = "; ".join(refused)
            log.warn("{reason}: the service answers for node {node} from now on",
                     reason=reason, node=pubsub_node.name)
            await self._give_up(client, service, pubsub_node, reason)
        async with _locked(self._lock(pubsub_node.id)):
            await self.storage.pubsub.cache_pubsub_items(pubsub_node.id, rows)
        if node_traits(pubsub_node)["silent_trim"]:
            await self._drop_trimmed(client, service, pubsub_node)
        bridge = getattr(self.host, "bridge", None)
        if rows and bridge is not None and "cache_new_items" in bridge.signals:
            bridge.emit_signal("cache_new_items", profile=self._profile(client),
                               service=pubsub_node.service, node=pubsub_node.name,
                               item_ids=[r["name"] for r in rows])

    async def _drop_trimmed(self, client: Any, service: jabber_jid.JID, pubsub_node: Any
                            ) -> None:
        """Drop the items a service removed without telling (beyond the node's
        ``max_items``, Prosody sends no retraction).

        The node's item ids are listed with service discovery, lighter than the items.
        """
        query = domish.Element((NS_DISCO_ITEMS, "query"))
        query["node"] = pubsub_node.name
        try:
            iq = await client.request(IQRequest(service, "get", query,
                                                timeout=TRAITS_TIMEOUT))
        except Exception as e:
            log.debug("can't list the items of {node}: {error}", node=pubsub_node.name,
                      error=e)
            return
        answer = next(iq.elements(NS_DISCO_ITEMS, "query"), None)
        if answer is None:
            return
        present = {i.getAttribute("name") for i in answer.elements(NS_DISCO_ITEMS, "item")}
        __, page = await self.storage.pubsub.get_items(pubsub_node.id, max_items=0)
        if page.count <= len(present):
            return
        cached, __ = await self.storage.pubsub.get_items(pubsub_node.id)
        gone = [i.name for i in cached if i.name not in present]
        if gone:
            log.debug("{n} item(s) of {node} dropped by the service", n=len(gone),
                      node=pubsub_node.name)
            await self._delete_items(pubsub_node, gone)

    async def _delete_items(self, pubsub_node: Any, item_ids: list[str] | None) -> None:
        async with _locked(self._lock(pubsub_node.id)):
            await self.storage.pubsub.delete_pubsub_items(pubsub_node.id, item_ids)

    async def _forget(self, client: Any, pubsub_node: Any) -> None:
        """Drop a node and its items from the cache."""
        self._verified.discard(pubsub_node.id)
        async with _locked(self._lock(pubsub_node.id)):
            await self.storage.pubsub.delete_pubsub_nodes(
                profiles=[self._profile(client)], services=[pubsub_node.service],
                names=[pubsub_node.name])
        self._node_locks.pop(pubsub_node.id, None)

    async def _on_retract_event(self, client: Any, service: jabber_jid.JID, node: str,
                                item_ids: list[str], message: domish.Element) -> bool:
        pubsub_node = await self._cached_node(client, service, node)
        if pubsub_node is not None and not self._defer_if_syncing(
            pubsub_node, "retract", item_ids
        ):
            await self._delete_items(pubsub_node, item_ids)
        return True

    async def _on_purge_event(self, client: Any, service: jabber_jid.JID, node: str,
                              message: domish.Element) -> bool:
        pubsub_node = await self._cached_node(client, service, node)
        if pubsub_node is not None and not self._defer_if_syncing(
            pubsub_node, "purge", None
        ):
            await self._delete_items(pubsub_node, None)
        return True

    async def _on_delete_event(self, client: Any, service: jabber_jid.JID, node: str,
                               message: domish.Element | None) -> bool:
        pubsub_node = await self.storage.pubsub.get_pubsub_node(
            self._profile(client), _service_key(service), node)
        if pubsub_node is not None and not self._defer_if_syncing(
            pubsub_node, "delete", None
        ):
            await self._forget(client, pubsub_node)
        return True

    async def _on_configuration_event(self, client: Any, service: jabber_jid.JID,
                                      node: str, options: Any, message: domish.Element
                                      ) -> bool:
        # what the node holds may have changed: forget it and analyse it again
        pubsub_node = await self.storage.pubsub.get_pubsub_node(
            self._profile(client), _service_key(service), node)
        if pubsub_node is None or self._defer_if_syncing(pubsub_node, "configuration",
                                                         options):
            return True
        await self._forget(client, pubsub_node)
        self._spawn(self._analyse_and_sync(client, service, node))
        return True

    # verification after (re)connection

    async def profile_connected(self, client: Any) -> None:
        """Check the profile's synchronised nodes against the services.

        Until a node is checked, requests about it go to the service.  Nodes whose
        synchronisation was interrupted (backend stopped) are synchronised again.
        """
        profile = self._profile(client)
        nodes = await self.storage.pubsub.get_pubsub_nodes(
            profile, sync_states=[SyncState.COMPLETED, SyncState.IN_PROGRESS, None])
        for pubsub_node in nodes:
            self._verified.discard(pubsub_node.id)
        for pubsub_node in nodes:
            if pubsub_node.id in self._syncing:
                continue
            service = jabber_jid.JID(pubsub_node.service)
            if pubsub_node.sync_state is SyncState.COMPLETED:
                self._spawn(self._verify(client, service, pubsub_node))
            elif pubsub_node.analyser is not None:
                # interrupted (backend stopped) or never started: do it from the start
                self._spawn(self.synchronise(client, service, pubsub_node.name,
                                             force=True))

    async def profile_disconnected(self, client: Any) -> None:
        """Events will be missed: the profile's nodes are not served until checked."""
        for pubsub_node in await self.storage.pubsub.get_pubsub_nodes(self._profile(client)):
            self._verified.discard(pubsub_node.id)

    async def _verify(self, client: Any, service: jabber_jid.JID, pubsub_node: Any
                      ) -> None:
        """Compare a node's cache with the service; refresh it if they differ."""
        if pubsub_node.id in self._syncing:
            return  # a synchronisation is already rewriting it
        verified = []

        async def compare() -> None:
            started = self._stamp()
            await self._subscribe_again(client, service, pubsub_node)
            remote, learnt = await self._sync_semaphore.run(
                lambda: defer.ensureDeferred(self._fetch_all(client, service, pubsub_node)))
            traits = node_traits(pubsub_node)
            order = "modification" if traits["republish_moves"] else "creation"
            cached, __ = await self.storage.pubsub.get_items(pubsub_node.id,
                                                             order_by=order)
            remote_view = [(i["id"], i.toXml()) for i in remote]
            cached_view = [(i.name, i.data) for i in cached]
            if remote_view != cached_view or learnt["rsm"] != traits["rsm"]:
                log.info("node {node} changed while we were away: refreshing its cache",
                         node=pubsub_node.name)
                rows = [await self._row(client, service, pubsub_node, item)
                        for item in remote]
                await self._store_fetched(client, service, pubsub_node, rows, started,
                                          traits | learnt)
            verified.append(True)

        try:
            await self._buffering_events(client, service, pubsub_node, compare)
        except ItemNotFound:
            log.info("node {node} was deleted while we were away", node=pubsub_node.name)
            await self._on_delete_event(client, service, pubsub_node.name, None)
            return
        except Exception as e:
            log.warn("can't verify node {node}: {error}; it stays unserved until the "
                     "next connection", node=pubsub_node.name, error=e)
            return
        if verified:
            self._verified.add(pubsub_node.id)

    async def _subscribe_again(self, client: Any, service: jabber_jid.JID,
                               pubsub_node: Any) -> None:
        """Subscribe to the node again; servers take it as a no-op when subscribed.

        A node deleted and created again while the profile was away has the same name,
        maybe the same items, but not its former subscribers: without a new
        subscription its events would never come, and the cache, served once verified,
        would stay behind.  Asking first is no help: Prosody goes on listing the
        subscriptions to the deleted node.
        """
        try:
            await self._xep_0060.subscribe(client, service, pubsub_node.name)
        except ItemNotFound:
            raise
        except PubsubError as e:
            raise CacheError(f"can't subscribe to {pubsub_node.name!r}: {e}") from None

    # management

    async def get_node(self, profile: str, service: str, node: str) -> Any:
        pubsub_node = await self.storage.pubsub.get_pubsub_node(
            profile, _service_key(jabber_jid.JID(service)), node)
        if pubsub_node is None:
            raise NotFound(f"node {node!r} of {service} is not in the cache")
        return pubsub_node

    def _register_bridge(self) -> None:
        bridge = getattr(self.host, "bridge", None)
        if bridge is None:
            return
        bridge.register_signal(
            "cache_sync_progress",
            "a node's synchronisation progressed: params {profile, service, node, state, "
            "done, expected}")
        bridge.register_signal(
            "cache_new_items",
            "items were added to the cache: params {profile, service, node, item_ids}")
        for name in ("get", "sync", "purge", "reset", "stats", "node_state", "search"):
            bridge.register_method(f"cache_{name}", getattr(self, f"_bridge_{name}"))

    async def _bridge_get(self, profile: str, service: str | None, node: str,
                          max_items: int | None = None, item_ids: list[str] | None = None,
                          rsm: dict[str, Any] | None = None, order_by: str | None = None
                          ) -> dict[str, Any]:
        """Items of a cached node, from the cache only (never the service)."""
        check_node(node)
        client = self.host.clients.get(profile)
        service_jid = self._xep_0060.service_jid(client, service)
        pubsub_node = await self.get_node(profile, service_jid.full(), node)
        if pubsub_node.sync_state is not SyncState.COMPLETED:
            raise CacheError(f"node {node!r} is not synchronised (state: "
                             f"{STATE_NAMES.get(pubsub_node.sync_state)})")
        rsm_request = RSMRequest.from_dict(rsm) if rsm else None
        result = await self.get_cached_items(pubsub_node, service_jid, max_items,
                                             item_ids, rsm_request, order_by)
        return result.serialise()

    async def _bridge_sync(self, profile: str, service: str | None, node: str
                           ) -> dict[str, Any]:
        """Synchronise a node now (again if it was), answering once done."""
        check_node(node)
        client = self.host.clients.get(profile)
        service_jid = self._xep_0060.service_jid(client, service)
        return await self.synchronise(client, service_jid, node, force=True)

    async def _bridge_node_state(self, profile: str, service: str | None, node: str
                                 ) -> dict[str, Any]:
        """Cache state of a node."""
        check_node(node)
        client = self.host.clients.get(profile)
        service_jid = self._xep_0060.service_jid(client, service)
        return self.node_state(await self.get_node(profile, service_jid.full(), node))

    async def _bridge_purge(
        self, profile: str, services: list[str] | None = None,
        nodes: list[str] | None = None, types: list[str] | None = None,
        subtypes: list[str] | None = None, created_before: str | None = None,
        updated_before: str | None = None,
    ) -> int:
        """Delete cached items matching every filter given; answer how many."""
        def when(value: str | None) -> datetime | None:
            if value is None:
                return None
            try:
                stamp = datetime.fromisoformat(value)
            except ValueError:
                raise CacheError(f"invalid date {value!r}: use ISO 8601") from None
            return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)

        return await self.storage.pubsub.purge_pubsub_items(
            profiles=[profile], services=services, names=nodes, types=types,
            subtypes=subtypes, created_before=when(created_before),
            updated_before=when(updated_before))

    async def _bridge_reset(self, profile: str) -> int:
        """Forget every cached node of the profile; answer how many."""
        return await self.storage.pubsub.delete_pubsub_nodes(profiles=[profile])

    async def _bridge_stats(self, profile: str) -> dict[str, Any]:
        """Nodes by state, items and bytes cached for the profile."""
        stats = await self.storage.pubsub.get_cache_stats(profile)
        by_state = {
            STATE_NAMES.get(None if name == "none" else SyncState[name], name.lower()):
            count for name, count in stats["nodes"].items()
        }
        return {"nodes": sum(by_state.values()), "nodes_by_state": by_state,
                "items": stats["items"], "bytes": stats["bytes"]}

    async def _bridge_search(self, profile: str, query: dict[str, Any] | None = None
                             ) -> dict[str, Any]:
        """Search the profile's cached items (see doc/developer/search.rst)."""
        from libervia.backend.memory.storage import InvalidQuery, SearchQuery

        if query is not None and not isinstance(query, dict):
            raise InvalidQuery("a search query is a JSON object")
        query = dict(query or {})
        # a profile only ever searches its own cache
        if "profiles" in query:
            raise InvalidQuery("'profiles' can't be given: a search covers the calling "
                               "profile's cache only")
        services = query.get("services")
        if isinstance(services, list):
            try:
                query["services"] = [_service_key(jabber_jid.JID(s)) for s in services]
            except (jabber_jid.InvalidFormat, TypeError, AttributeError):
                raise InvalidQuery(f"invalid service JID in {services!r}") from None
        result = await self.storage.search.search_items(
            SearchQuery.from_dict({**query, "profiles": [profile]}))
        return result.to_dict()


def node_traits(pubsub_node: Any) -> dict[str, Any]:
    """Traits of a cached node's service, as recorded when it was synchronised."""
    recorded = (pubsub_node.extra or {}).get("traits") or {}
    return DEFAULT_TRAITS | {k: v for k, v in recorded.items() if k in DEFAULT_TRAITS}


def _known_software(name: str) -> bool:
    lowered = name.lower()
    return any(known in lowered for known in KNOWN_SOFTWARE)


def _metadata_type(metadata: dict[str, Any] | None) -> str | None:
    return ((metadata or {}).get("meta_data") or {}).get("pubsub#type") or None


def _has_payload(item: domish.Element) -> bool:
    return any(True for __ in item.elements())


def _as_pubsub_item(item: domish.Element) -> domish.Element:
    """An event's ``<item/>`` (pubsub#event namespace) as the items request gives it."""
    if item.uri == NS_PUBSUB:
        return item
    converted = domish.Element((NS_PUBSUB, "item"))
    for key, value in item.attributes.items():
        converted[key] = value
    for child in item.children:
        converted.addChild(child)
    return converted


class _locked:  # noqa: N801 (used as a context manager)
    """``async with _locked(lock)`` for a DeferredLock."""

    def __init__(self, lock: defer.DeferredLock) -> None:
        self.lock = lock

    async def __aenter__(self) -> None:
        await self.lock.acquire()

    async def __aexit__(self, *exc: Any) -> None:
        self.lock.release()


#: signature of an analyser's parser
Parser = Callable[[Any, domish.Element, jabber_jid.JID, str], Any]
