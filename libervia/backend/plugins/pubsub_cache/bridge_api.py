"""The cache's bridge methods (``cache_*``) and signals, for frontends."""

from datetime import UTC, datetime
from typing import Any

from twisted.words.protocols.jabber import jid as jabber_jid

from libervia.backend.core.exceptions import NotConnected
from libervia.backend.core.interfaces import Client
from libervia.backend.core.jids import InvalidJID, parse_jid
from libervia.backend.memory.sqla_mapping import PubsubNode, SyncState
from libervia.backend.plugins.plugin_xep_0059 import RSMError, RSMRequest
from libervia.backend.plugins.pubsub_cache.serving import CachedAnswers
from libervia.backend.plugins.pubsub_cache.state import CacheError, service_key
from libervia.backend.plugins.pubsub_cache.store import STATE_NAMES, CacheStore, node_state
from libervia.backend.plugins.pubsub_cache.sync import Synchroniser
from libervia.backend.plugins.xep_0060.operations import Pubsub
from libervia.backend.plugins.xep_0060.stanzas import (
    InvalidRequest,
    OrderBy,
    check_node,
    check_text,
)
from libervia.backend.xmpp.clients import ConnectionHost
from libervia.backend.xmpp.profiles import ProfileManager

METHODS = ("get", "sync", "purge", "reset", "stats", "node_state", "search")


class CacheBridge:
    """``cache_get``, ``cache_sync``... as the bridge calls them."""

    def __init__(self, host: ConnectionHost, pubsub: Pubsub, store: CacheStore,
                 sync: Synchroniser, answers: CachedAnswers) -> None:
        self.host = host
        self.pubsub = pubsub
        self.store = store
        self.storage = store.storage
        self.synchroniser = sync
        self.answers = answers

    def register(self) -> None:
        """Register the methods and signals on the host's bridge."""
        bridge = self.host.bridge
        bridge.register_signal(
            "cache_sync_progress",
            "a node's synchronisation progressed: params {profile, service, node, state, "
            "done, expected}")
        bridge.register_signal(
            "cache_new_items",
            "items were added to the cache: params {profile, service, node, item_ids}")
        for name in METHODS:
            bridge.register_method(f"cache_{name}", getattr(self, name))

    async def _reader(self, profile: str, service: str | None
                      ) -> tuple[Client | None, jabber_jid.JID]:
        """The client of a profile, ``None`` while it is disconnected (what is stored
        is read all the same), and the service a method names (``None`` or ``""``:
        the profile's own account).

        :raise ProfileNotFound: there is no such profile
        :raise InvalidRequest: an invalid service JID
        """
        name = _profile(profile)
        try:
            client: Client | None = self.host.clients.get(name)
        except NotConnected:
            client = None
        if service:
            return client, self.pubsub.service_jid(client, service)
        if client is not None:
            return client, client.jid.userhostJID()
        account = await self.host.profiles.get(name)
        return None, parse_jid(account.jid).userhostJID()

    async def _describe(self, client: Client | None, pubsub_node: PubsubNode
                        ) -> dict[str, Any]:
        """A node's state (:func:`~.store.node_state`), with what it holds now and how
        far that can be trusted.

        ``items`` is the number of items the cache holds for the node; for a
        synchronised node, ``items_done`` and ``items_expected`` say the same (events
        add and remove items after the synchronisation).  ``freshness`` is ``live``,
        ``unchecked`` or ``offline`` for a synchronised node (see
        :meth:`~.serving.CachedAnswers.freshness`), ``None`` otherwise; ``served`` whether requests
        are answered from the cache now.
        """
        state = node_state(pubsub_node)
        __, page = await self.storage.pubsub.get_items(pubsub_node.id, max_items=0)
        state["items"] = page.count
        if pubsub_node.sync_state is SyncState.COMPLETED:
            state["items_done"] = state["items_expected"] = page.count
        state["freshness"] = self.answers.freshness(pubsub_node, client)
        state["served"] = state["freshness"] == "live"
        return state

    async def get(self, profile: str, service: str | None, node: str,
                  max_items: int | None = None, item_ids: list[str] | None = None,
                  rsm: dict[str, Any] | None = None, order_by: OrderBy | None = None
                  ) -> dict[str, Any]:
        """Items of a synchronised node, from the cache only (never the service), also
        while the profile is disconnected; the answer's metadata give the node's
        ``freshness`` (see :meth:`_describe`)."""
        try:
            rsm_request = RSMRequest.from_dict(rsm) if rsm else None
        except RSMError as e:
            raise InvalidRequest(str(e)) from None
        client, service_jid = await self._reader(profile, service)
        # the request pubsub_get would send: the cache takes what a service takes
        request = self.pubsub.items_request(client, service_jid, node, max_items,
                                            item_ids, rsm_request, order_by)
        pubsub_node = await self.store.known_node(profile, service_jid.full(), node)
        if pubsub_node.sync_state is not SyncState.COMPLETED:
            raise CacheError(f"node {node!r} is not synchronised (state: "
                             f"{STATE_NAMES.get(pubsub_node.sync_state)})")
        result = await self.answers.get_cached_items(
            pubsub_node, service_jid, max_items, request.item_ids or None, rsm_request,
            order_by)
        result.extra["freshness"] = self.answers.freshness(pubsub_node, client)
        return result.serialise()

    async def sync(self, profile: str, service: str | None, node: str) -> dict[str, Any]:
        """Synchronise a node now (again if it was), answering once done."""
        check_node(node)
        client = self.host.clients.get(_profile(profile))
        service_jid = self.pubsub.service_jid(client, service)
        await self.synchroniser.synchronise(client, service_jid, node, force=True)
        return await self._describe(client, await self.store.known_node(
            profile, service_jid.full(), node))

    async def node_state(self, profile: str, service: str | None, node: str
                         ) -> dict[str, Any]:
        """Cache state of a node (see :meth:`_describe`), also while the profile is
        disconnected.

        :raise NotFound: the cache does not know the node
        """
        check_node(node)
        client, service_jid = await self._reader(profile, service)
        return await self._describe(
            client, await self.store.known_node(profile, service_jid.full(), node))

    async def purge(
        self, profile: str, services: list[str] | None = None,
        nodes: list[str] | None = None, types: list[str] | None = None,
        subtypes: list[str] | None = None, created_before: str | None = None,
        updated_before: str | None = None,
    ) -> int:
        """Delete cached items matching every filter given; answer how many."""
        for what, values in (("a service", services), ("a node name", nodes),
                             ("a type", types), ("a subtype", subtypes)):
            # none of them could match a text XML can't carry, nor could the database
            # (PostgreSQL) take some of them
            for value in values or ():
                check_text(value, what)
        return await self.storage.pubsub.purge_pubsub_items(
            profiles=[_profile(profile)], services=services, names=nodes, types=types,
            subtypes=subtypes, created_before=_date(created_before),
            updated_before=_date(updated_before))

    async def reset(self, profile: str) -> int:
        """Forget every cached node of the profile; answer how many."""
        return await self.storage.pubsub.delete_pubsub_nodes(profiles=[_profile(profile)])

    async def stats(self, profile: str) -> dict[str, Any]:
        """Nodes by state, items and bytes cached for the profile."""
        stats = await self.storage.pubsub.get_cache_stats(_profile(profile))
        by_state = {
            STATE_NAMES.get(None if name == "none" else SyncState[name], name.lower()):
            count for name, count in stats["nodes"].items()
        }
        return {"nodes": sum(by_state.values()), "nodes_by_state": by_state,
                "items": stats["items"], "bytes": stats["bytes"]}

    async def search(self, profile: str, query: dict[str, Any] | None = None
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
        if isinstance(services, list) and all(isinstance(s, str) for s in services):
            try:
                query["services"] = [service_key(parse_jid(s)) for s in services]
            except InvalidJID:
                raise InvalidQuery(f"invalid service JID in {services!r}") from None
        result = await self.storage.search.search_items(
            SearchQuery.from_dict({**query, "profiles": [_profile(profile)]}))
        return result.to_dict()


def _profile(name: str) -> str:
    """``name`` if it can be a profile's (else no profile has it).

    :raise ProfileError: a name no profile can have
    """
    return ProfileManager.check_name(name)


def _date(value: str | None) -> datetime | None:
    """An ISO 8601 date given to a filter (UTC when it names no time zone)."""
    if value is None:
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise CacheError(f"invalid date {value!r}: use ISO 8601") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
