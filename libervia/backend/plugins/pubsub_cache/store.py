"""The cache's reads and writes of its nodes and items.

Every change of a node's items goes through :class:`CacheStore`, under the node's lock
(:meth:`~libervia.backend.plugins.pubsub_cache.state.CacheState.lock`), and tells
frontends what changed (bridge signals ``cache_sync_progress`` and
``cache_new_items``).  Items are stored as their XML text, with what the node's
analyser parser extracts from them.
"""

import json
from datetime import UTC, datetime
from typing import Any

from twisted.internet import defer
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from libervia.backend.core.async_utils import maybe_async_call
from libervia.backend.core.exceptions import NotFound
from libervia.backend.core.interfaces import Client
from libervia.backend.core.jids import parse_jid
from libervia.backend.core.log import getLogger
from libervia.backend.memory.sqla_mapping import PubsubNode, SyncState
from libervia.backend.plugins.pubsub_cache.analysers import Analysers
from libervia.backend.plugins.pubsub_cache.state import CacheError, CacheState, service_key
from libervia.backend.plugins.pubsub_cache.traits import (
    TRAITS_TIMEOUT,
    ServiceTraits,
    node_traits,
)
from libervia.backend.xmpp.profiles import StorageHost

log = getLogger(__name__)

#: sync states as the API shows them
STATE_NAMES = {None: "none", SyncState.IN_PROGRESS: "in_progress",
               SyncState.COMPLETED: "completed", SyncState.ERROR: "error",
               SyncState.NO_SYNC: "no_sync"}

#: an item as stored: name, data (XML), parsed, and created/updated once stamped
Row = dict[str, Any]


def node_state(pubsub_node: PubsubNode) -> dict[str, Any]:
    """A node's cache state, as the API gives it.

    ``items_done`` and ``items_expected`` are the progress of its last (or running)
    synchronisation; ``since`` is when it got its state (ISO 8601, UTC).
    """
    since = pubsub_node.sync_state_updated
    return {
        "service": pubsub_node.service, "node": pubsub_node.name,
        "analyser": pubsub_node.analyser, "type": pubsub_node.type_,
        "subtype": pubsub_node.subtype,
        "state": STATE_NAMES.get(pubsub_node.sync_state, "none"),
        "since": since.isoformat() if since is not None else None,
        "items_done": pubsub_node.sync_items_done,
        "items_expected": pubsub_node.sync_items_expected,
        "subscribed": pubsub_node.subscribed,
        "error": (pubsub_node.extra or {}).get("error"),
    }


def profile_of(client: Client) -> str:
    """The name of a client's profile, as nodes are stored under it."""
    return client.profile.name


class CacheStore:
    """Reads and writes the cached nodes and items of every profile."""

    def __init__(self, host: StorageHost, state: CacheState, analysers: Analysers,
                 parser_timeout: int) -> None:
        self.host = host
        self.storage = host.storage
        #: the XEP-0030 plugin, which lists a node's items
        self.disco = host.plugins["XEP-0030"]
        self.state = state
        self.analysers = analysers
        self.parser_timeout = parser_timeout

    # nodes

    async def node(self, client: Client, service: jabber_jid.JID, name: str
                   ) -> PubsubNode | None:
        """The cached node of a client's profile, if the cache knows it."""
        return await self.storage.pubsub.get_pubsub_node(profile_of(client),
                                                  service_key(service), name)

    async def known_node(self, profile: str, service: str, name: str) -> PubsubNode:
        """A cached node of a profile (``service`` a JID as text).

        :raise NotFound: the cache does not know it
        """
        pubsub_node = await self.storage.pubsub.get_pubsub_node(
            profile, service_key(parse_jid(service)), name)
        if pubsub_node is None:
            raise NotFound(f"node {name!r} of {service} is not in the cache")
        return pubsub_node

    async def record(self, client: Client, service: jabber_jid.JID, name: str,
                     **values: Any) -> PubsubNode:
        """Create or update a node's row (see ``Storage.set_pubsub_node``)."""
        return await self.storage.pubsub.set_pubsub_node(profile_of(client), service_key(service),
                                                  name, **values)

    async def forget(self, client: Client, pubsub_node: PubsubNode) -> None:
        """Drop a node and its items from the cache."""
        self.state.unverify(pubsub_node.id)
        async with self.state.lock(pubsub_node.id):
            await self.storage.pubsub.delete_pubsub_nodes(
                profiles=[profile_of(client)], services=[pubsub_node.service],
                names=[pubsub_node.name])
        self.state.forget_lock(pubsub_node.id)

    async def give_up(self, client: Client, service: jabber_jid.JID,
                      pubsub_node: PubsubNode, reason: str) -> None:
        """The node can't be kept equal to the service: ERROR, the service answers."""
        self.state.unverify(pubsub_node.id)
        try:
            await self.record(client, service, pubsub_node.name,
                              sync_state=SyncState.ERROR, extra={"error": reason})
        except Exception:
            log.failure("can't record the failed synchronisation of {node}",
                        node=pubsub_node.name)
        self.emit_progress(client, pubsub_node, SyncState.ERROR, 0, None)

    # items

    async def row(self, client: Client, service: jabber_jid.JID, pubsub_node: PubsubNode,
                  item: domish.Element) -> Row:
        """A fetched item as stored, time stamps apart: its XML and parsed data."""
        return {"name": item["id"], "data": serialise(item, pubsub_node.name),
                "parsed": await self.parse(client, pubsub_node, item, service)}

    async def parse(self, client: Client, pubsub_node: PubsubNode, item: domish.Element,
                    service: jabber_jid.JID) -> Any:
        """What the node's analyser parser extracts from an item (``None`` if it has
        none, fails or times out)."""
        analyser = self.analysers.by_name.get(pubsub_node.analyser or "")
        if analyser is None or analyser.parser is None:
            return None
        d = maybe_async_call(analyser.parser, client, item, service, pubsub_node.name)
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
                     name=analyser.name, item=item.getAttribute("id"),
                     node=pubsub_node.name)
        except Exception:
            log.failure("analyser {name}: parser failed on item {item} of {node}",
                        name=analyser.name, item=item.getAttribute("id"),
                        node=pubsub_node.name)
        return None

    async def store_fetched(self, client: Client, service: jabber_jid.JID,
                            pubsub_node: PubsubNode, rows: list[Row], started: datetime,
                            traits: ServiceTraits) -> None:
        """Replace the node's items by ``rows`` (see :meth:`row`), in the service's
        order, at once; the node becomes COMPLETED.

        Items keep the times they had (see ``replace_pubsub_items``): an item already
        cached keeps its creation time, and its modification time unless its data
        changed; a new one has the dates its payload gives (:func:`payload_dates`),
        else ``started``, when the fetch began (items arriving later, by events, come
        after it).  Ties are broken by the service's order.
        """
        count = len(rows)
        for row in rows:
            row.update(payload_dates(row.get("parsed"), started))
        async with self.state.lock(pubsub_node.id):
            # the traits first: a node is never COMPLETED without them
            stored_traits = traits.as_dict()
            await self.record(client, service, pubsub_node.name,
                              extra={"traits": stored_traits})
            pubsub_node.extra = {"traits": stored_traits}
            await self.storage.pubsub.replace_pubsub_items(
                pubsub_node.id, rows, sync_state=SyncState.COMPLETED, seen=started,
                order=traits.item_order)
        self.emit_progress(client, pubsub_node, SyncState.COMPLETED, count, count)

    async def upsert(self, client: Client, service: jabber_jid.JID, pubsub_node: PubsubNode,
                     items: list[domish.Element]) -> None:
        """Add or update items a service notified (the node stays as it is)."""
        rows = []
        refused: list[str] = []
        for item in items:
            try:
                data = serialise(item, pubsub_node.name)
            except CacheError as e:
                refused.append(str(e))
                continue
            parsed = await self.parse(client, pubsub_node, item, service)
            stamp = self.state.stamp()
            # a new item gets this creation time; an existing one keeps its own (the
            # update time orders items of services moving re-published items)
            rows.append({"name": item["id"], "data": data, "parsed": parsed,
                         "updated": stamp, "created": stamp})
        if refused:
            # the cache would miss these items: it stops answering for the node
            reason = "; ".join(refused)
            log.warn("{reason}: the service answers for node {node} from now on",
                     reason=reason, node=pubsub_node.name)
            await self.give_up(client, service, pubsub_node, reason)
        async with self.state.lock(pubsub_node.id):
            await self.storage.pubsub.cache_pubsub_items(pubsub_node.id, rows)
        if node_traits(pubsub_node).silent_trim:
            await self._drop_trimmed(client, service, pubsub_node)
        if rows:
            self._emit("cache_new_items", profile=profile_of(client),
                       service=pubsub_node.service, node=pubsub_node.name,
                       item_ids=[r["name"] for r in rows])

    async def delete_items(self, pubsub_node: PubsubNode, item_ids: list[str] | None
                           ) -> None:
        """Delete some items of a node, or all of them (``None``)."""
        async with self.state.lock(pubsub_node.id):
            await self.storage.pubsub.delete_pubsub_items(pubsub_node.id, item_ids)

    async def _drop_trimmed(self, client: Client, service: jabber_jid.JID,
                            pubsub_node: PubsubNode) -> None:
        """Drop the items a service removed without telling (beyond the node's
        ``max_items``, Prosody sends no retraction).

        The node's item ids are listed with service discovery, lighter than the items.
        """
        try:
            listed = await self.disco.get_items(client, service, pubsub_node.name,
                                                timeout=TRAITS_TIMEOUT)
        except Exception as e:
            log.debug("can't list the items of {node}: {error}", node=pubsub_node.name,
                      error=e)
            return
        present = {item.name for item in listed}
        __, page = await self.storage.pubsub.get_items(pubsub_node.id, max_items=0)
        if page.count <= len(present):
            return
        cached, __ = await self.storage.pubsub.get_items(pubsub_node.id)
        gone = [i.name for i in cached if i.name not in present]
        if gone:
            log.debug("{n} item(s) of {node} dropped by the service", n=len(gone),
                      node=pubsub_node.name)
            await self.delete_items(pubsub_node, gone)

    # what frontends are told

    def emit_progress(self, client: Client, pubsub_node: PubsubNode,
                      state: SyncState | None, done: int, expected: int | None) -> None:
        """Signal ``cache_sync_progress``: a node's synchronisation moved on."""
        self._emit("cache_sync_progress", profile=profile_of(client),
                   service=pubsub_node.service, node=pubsub_node.name,
                   state=STATE_NAMES[state], done=done, expected=expected)

    def _emit(self, signal: str, **data: Any) -> None:
        if signal in self.host.bridge.signals:
            self.host.bridge.emit_signal(signal, **data)


def payload_dates(parsed: Any, latest: datetime) -> dict[str, datetime]:
    """The dates an item's payload gives, as its analyser's parser read them:
    ``published`` (its creation) and ``updated`` (its modification), ISO 8601 texts
    (UTC when they name no time zone), as the XEP-0277 parser gives them for Atom
    entries.  XEP-0060 items carry no date of their own.

    A value that is not such a date, or that is later than ``latest`` (a date in the
    future is no date: the item is there already), is left out.

    :return: ``created`` and/or ``updated``, as far as they are given
    """
    if not isinstance(parsed, dict):
        return {}
    dates = {}
    for key, name in (("published", "created"), ("updated", "updated")):
        value = parsed.get(key)
        if not isinstance(value, str):
            continue
        try:
            stamp = datetime.fromisoformat(value)
            stamp = (stamp.replace(tzinfo=UTC) if stamp.tzinfo is None
                     else stamp.astimezone(UTC))
        except (ValueError, OverflowError):  # (beyond year 1 or 9999 once in UTC)
            continue
        if stamp <= latest:
            dates[name] = stamp
    return dates


def serialise(item: domish.Element, node: str) -> str:
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
