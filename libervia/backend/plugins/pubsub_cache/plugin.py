"""The pubsub cache plugin: its declaration, settings, and the object plugins use.

:class:`PubsubCache` puts the parts of the package together; each lives in its own
module, stacked without cycles:

``state``
    what the cache knows at run time (verified nodes, rewrites, locks);
``traits`` and ``analysers``
    how services answer, and what decides which nodes are cached;
``store``
    the reads and writes of cached nodes and items;
``fetch``
    a node fetched whole, the service held to what it says;
``sync``
    analysis, synchronisation, and verification after a connection;
``events`` and ``serving``
    the XEP-0060 event triggers, and get-items answered from the cache;
``bridge_api``
    the ``cache_*`` bridge methods.
"""

from collections.abc import Mapping
from typing import Any

from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from libervia.backend.core.config import declare, parse_positive_int
from libervia.backend.core.constants import C
from libervia.backend.core.interfaces import Client
from libervia.backend.memory.sqla_mapping import PubsubNode
from libervia.backend.plugins.plugin_xep_0059 import RSMRequest
from libervia.backend.plugins.pubsub_cache.analysers import Analyser, Analysers
from libervia.backend.plugins.pubsub_cache.bridge_api import CacheBridge
from libervia.backend.plugins.pubsub_cache.events import EventHandlers
from libervia.backend.plugins.pubsub_cache.serving import CachedAnswers
from libervia.backend.plugins.pubsub_cache.state import CacheState
from libervia.backend.plugins.pubsub_cache.store import CacheStore, node_state
from libervia.backend.plugins.pubsub_cache.sync import Synchroniser
from libervia.backend.plugins.pubsub_cache.traits import TraitsFinder
from libervia.backend.plugins.xep_0060.operations import TRIGGER_GET_ITEMS
from libervia.backend.plugins.xep_0060.stanzas import ItemsResult
from libervia.backend.xmpp.clients import ConnectionHost

IMPORT_NAME = "PUBSUB_CACHE"
SECTION = f"plugin {IMPORT_NAME}"

PLUGIN_INFO = {
    "name": "Pubsub cache",
    "import_name": IMPORT_NAME,
    "type": C.PLUG_TYPE_MISC,
    "modes": [C.PLUG_MODE_CLIENT],
    "protocols": [],
    "dependencies": ["XEP-0030", "XEP-0059", "XEP-0060", "XEP-0092"],
    "recommendations": [],
    "main": "PubsubCache",
    "handler": False,
    "description": "Keeps pubsub nodes in the database and answers from there.",
}


declare(SECTION, "max_items_per_node", parse_positive_int, 10000,
        "Largest node synchronised: a node with more items is not cached (the service "
        "is always asked for it).")
declare(SECTION, "page_size", parse_positive_int, 100,
        "Items asked per request while synchronising a node (services that page with "
        "RSM answer this many at a time).")
declare(SECTION, "parser_timeout", parse_positive_int, 10,
        "Seconds an analyser's parser may take for one item; past that the item is "
        "cached without parsed data.")
declare(SECTION, "sync_concurrency", parse_positive_int, 2,
        "Nodes synchronised (or verified) at the same time, per backend; one at a time "
        "per service, so that a slow service can't hold them all.")
declare(SECTION, "sync_timeout", parse_positive_int, 300,
        "Seconds a service may take to give a node whole (synchronisation or check "
        "after a connection); past that the node is not cached, the reason in its "
        "state.")


class PubsubCache:
    """The pubsub cache plugin; ``host.plugins["PUBSUB_CACHE"]``."""

    def __init__(self, host: ConnectionHost) -> None:
        self.host = host
        self.storage = host.storage
        #: the XEP-0060 plugin, through which services are asked
        self.pubsub = host.plugins["XEP-0060"]
        section = host.config.plugin_section(IMPORT_NAME)
        self.max_items_per_node = section.get_int("max_items_per_node")
        self.page_size = section.get_int("page_size")
        self.parser_timeout = section.get_int("parser_timeout")
        self._analysers = Analysers()
        self._state = CacheState()
        self._store = CacheStore(host, self._state, self._analysers, self.parser_timeout)
        self._sync = Synchroniser(
            self.pubsub, self._state, self._store, self._analysers,
            TraitsFinder(host.plugins["XEP-0030"], host.plugins["XEP-0092"]),
            max_items_per_node=self.max_items_per_node, page_size=self.page_size,
            sync_concurrency=section.get_int("sync_concurrency"),
            sync_timeout=section.get_int("sync_timeout"), reactor=host.reactor)
        self._answers = CachedAnswers(self.pubsub, self._state, self._store, self._sync)
        # high priority: the cache answers before anything else asks the service
        host.trigger.add(TRIGGER_GET_ITEMS, self._answers.on_get_items, priority=500)
        EventHandlers(host, self.pubsub, self._state, self._store,
                      self._sync).register(host.trigger)
        CacheBridge(host, self.pubsub, self._store, self._sync,
                    self._answers).register()

    # analysers

    @property
    def analysers(self) -> dict[str, Analyser]:
        """The registered analysers, by name."""
        return self._analysers.by_name

    def register_analyser(self, analyser: Analyser | Mapping[str, Any]) -> None:
        """Register an analyser, which decides how a kind of node is cached.

        ``analyser`` is an :class:`~.analysers.Analyser`, or a dict of its fields
        (``name``, ``type``, ``subtype``, ``node``, ``namespace``, ``order``,
        ``to_sync``, ``parser``, ``match_cb``; see the class for what each means).

        :raise InvalidAnalyser: missing or wrongly typed key, unknown key, or a name
            already registered
        """
        self._analysers.register(analyser)

    async def analyse_node(
        self, client: Client, service: jabber_jid.JID, node: str,
        item: domish.Element | None = None, metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Find the analyser of a node; ``None`` if none matches.

        The node's metadata and one item are fetched when neither is given (and only
        if an analyser could need them).
        """
        return await self._sync.analyse_node(client, service, node, item, metadata)

    # synchronisation and answers

    async def synchronise(self, client: Client, service: jabber_jid.JID, node: str,
                          force: bool = False) -> dict[str, Any]:
        """Synchronise a node now (see :meth:`.sync.Synchroniser.synchronise`)."""
        return await self._sync.synchronise(client, service, node, force)

    async def get_cached_items(
        self, pubsub_node: PubsubNode, service: jabber_jid.JID,
        max_items: int | None = None, item_ids: list[str] | None = None,
        rsm_request: RSMRequest | None = None, order_by: str | None = None,
    ) -> ItemsResult:
        """Answer a get-items request from the database, as the service would (see
        :meth:`~.serving.CachedAnswers.get_cached_items`)."""
        return await self._answers.get_cached_items(pubsub_node, service, max_items,
                                                    item_ids, rsm_request, order_by)

    @staticmethod
    def node_state(pubsub_node: PubsubNode) -> dict[str, Any]:
        """A node's cache state, as the API gives it."""
        return node_state(pubsub_node)

    async def wait_background(self) -> None:
        """Wait until every background analysis and synchronisation has ended."""
        await self._state.wait_background()

    # plugin hooks

    async def profile_connected(self, client: Client) -> None:
        """Check the profile's synchronised nodes against the services (see
        :meth:`.sync.Synchroniser.profile_connected`)."""
        await self._sync.profile_connected(client)

    async def profile_disconnected(self, client: Client) -> None:
        """Events will be missed: the profile's nodes are not served until checked."""
        await self._sync.profile_disconnected(client)
