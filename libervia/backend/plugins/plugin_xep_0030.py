"""XEP-0030: Service Discovery, both ways.

Asking: other plugins ask here, never with their own IQs.  :meth:`XEP_0030.get_info`
gives an entity's identities, features and extension forms (XEP-0128), from a cache
keyed by profile, entity and node (entries expire after ``cache_ttl`` seconds, and the
entity capabilities plugin, XEP-0115, replaces or drops an entity's entry when its
capabilities change); :meth:`XEP_0030.get_items` the items it lists (a server's
components, a pubsub node's item ids...), never cached.  Answers come from anyone:
what is malformed in them is left out, never raised, and what is kept of an answer is
bounded (:data:`MAX_IDENTITIES`, :data:`MAX_FEATURES`, :data:`MAX_FORMS`).

Answering: each profile answers the disco#info and disco#items requests addressed to
its own JIDs.  Its identity is ``client/pc`` (``[plugin XEP-0030]``
``identity_category``, ``identity_type``, ``identity_name``); its features are those
of the core (disco#info, disco#items), those each loaded plugin declares in its
``PLUGIN_INFO`` (``features``, and ``notify`` for PEP nodes, announced as
``NODE+notify``), and those added with :meth:`XEP_0030.add_feature` and
:meth:`XEP_0030.add_notify`.  Plugins answer for nodes of their own with
:meth:`XEP_0030.add_node_info` (XEP-0115 answers for ``node#ver``).
"""

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish
from wokkel import data_form
from wokkel.subprotocols import XMPPHandler

from libervia.backend.core.async_utils import SharedCalls
from libervia.backend.core.config import declare, parse_positive_int, parse_str
from libervia.backend.core.constants import C
from libervia.backend.core.exceptions import BackendError, NotFound
from libervia.backend.core.interfaces import Client
from libervia.backend.core.jids import jid_or_none
from libervia.backend.core.log import getLogger
from libervia.backend.core.xml_tools import NOT_XML_CHAR
from libervia.backend.xmpp.clients import ConnectionHost
from libervia.backend.xmpp.iq import IQRequest

log = getLogger(__name__)

IMPORT_NAME = "XEP-0030"
SECTION = f"plugin {IMPORT_NAME}"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_XML = "http://www.w3.org/XML/1998/namespace"
#: features of the core: what this plugin answers
CORE_FEATURES = (NS_DISCO_INFO, NS_DISCO_ITEMS)
NOTIFY_SUFFIX = "+notify"

#: seconds to wait for an answer
DEFAULT_TIMEOUT = 10
#: what is kept of an entity's disco#info at most; an answer with more is cut there,
#: and not cached
MAX_IDENTITIES = 64
MAX_FEATURES = 512
MAX_FORMS = 16
#: longest node name asked or answered for (characters)
MAX_NODE = 1024

PLUGIN_INFO = {
    "name": "Service discovery",
    "import_name": "XEP-0030",
    "type": C.PLUG_TYPE_XEP,
    "modes": list(C.PLUG_MODE_BOTH),
    "protocols": ["XEP-0030", "XEP-0128"],
    "dependencies": [],
    "recommendations": [],
    "main": "XEP_0030",
    "handler": True,
    "description": "Service discovery: what an entity is, what it supports and holds; "
                   "the backend's own answers.",
}


def _word(value: str) -> str:
    value = parse_str(value).strip()
    if not value or NOT_XML_CHAR.search(value):
        raise ValueError("expected a non-empty text without control characters")
    return value


declare(SECTION, "identity_category", _word, "client",
        "Category of the identity each profile gives in service discovery (XEP-0030).")
declare(SECTION, "identity_type", _word, "pc",
        "Type of the identity each profile gives in service discovery.")
declare(SECTION, "identity_name", _word, "Libervia",
        "Name of the identity each profile gives in service discovery.")
declare(SECTION, "cache_ttl", parse_positive_int, 3600,
        "Seconds an entity's disco#info is kept in memory (capabilities that XEP-0115 "
        "verified are kept until they change).")
declare(SECTION, "cache_size", parse_positive_int, 2000,
        "Entries of disco#info kept in memory per profile; the least recently used "
        "go first.")


class DiscoError(BackendError):
    """A service discovery request failed; the message says which entity and why."""

    def __init__(self, message: str, condition: str | None = None) -> None:
        super().__init__(message)
        #: the entity's error condition (``service-unavailable``...), if it answered one
        self.condition = condition


class DiscoNotFound(DiscoError, NotFound):
    """The entity (or its node) does not exist."""


class DiscoTimeout(DiscoError):
    """The entity did not answer in time."""


class InvalidDiscoRequest(DiscoError, ValueError):
    """The request can't be sent (bad JID or node)."""


@dataclass(frozen=True)
class Identity:
    """One identity of an entity (``category``/``type``, e.g. ``pubsub``/``service``)."""

    category: str
    type: str
    name: str | None = None
    #: language of the name (``xml:lang``)
    lang: str | None = None

    def serialise(self) -> dict[str, str | None]:
        return {"category": self.category, "type": self.type, "name": self.name,
                "lang": self.lang}


def form_fields(form: data_form.Form) -> dict[str, list[str]]:
    """A form's fields as ``{var: [values as text]}`` (``FORM_TYPE`` left out)."""
    fields: dict[str, list[str]] = {}
    for var, form_field in form.fields.items():
        if var == "FORM_TYPE":
            continue
        fields[var] = [v if isinstance(v, str) else str(v) for v in form_field.values]
    return fields


@dataclass
class DiscoInfo:
    """What an entity said of itself (disco#info)."""

    identities: list[Identity] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    #: extension forms (XEP-0128) by their FORM_TYPE
    forms: dict[str, data_form.Form] = field(default_factory=dict)
    #: the answer held more than the bounds: what is over them was left out
    truncated: bool = False

    @property
    def names(self) -> list[str]:
        """The names its identities give (a server's software often says its name
        there)."""
        return [i.name for i in self.identities if i.name]

    @classmethod
    def from_element(cls, query: domish.Element | None) -> "DiscoInfo":
        """Parse a ``<query xmlns='disco#info'/>``; a missing one gives nothing."""
        info = cls()
        if query is None:
            return info
        for identity in query.elements(NS_DISCO_INFO, "identity"):
            category, type_ = identity.getAttribute("category"), identity.getAttribute("type")
            if not (category and type_):
                continue
            if len(info.identities) >= MAX_IDENTITIES:
                info.truncated = True
                break
            info.identities.append(Identity(
                category, type_, identity.getAttribute("name") or None,
                identity.getAttribute((NS_XML, "lang")) or None))
        for feature in query.elements(NS_DISCO_INFO, "feature"):
            var = feature.getAttribute("var")
            if not var:
                continue
            if len(info.features) >= MAX_FEATURES:
                info.truncated = True
                break
            info.features.append(var)
        for form_elt in query.elements(data_form.NS_X_DATA, "x"):
            if len(info.forms) >= MAX_FORMS:
                info.truncated = True
                break
            try:
                form = data_form.Form.fromElement(form_elt)
            except Exception as e:  # anything the sender got wrong in its form
                log.debug("ignoring an invalid extension form: {error}", error=e)
                continue
            if form.formNamespace:
                info.forms.setdefault(form.formNamespace, form)
        return info

    def to_element(self, node: str | None = None) -> domish.Element:
        """The ``<query/>`` of a disco#info answer giving this."""
        query = domish.Element((NS_DISCO_INFO, "query"))
        if node:
            query["node"] = node
        for identity in self.identities:
            elt = query.addElement("identity")
            elt["category"], elt["type"] = identity.category, identity.type
            if identity.name:
                elt["name"] = identity.name
            if identity.lang:
                elt[(NS_XML, "lang")] = identity.lang
        for feature in self.features:
            query.addElement("feature")["var"] = feature
        for form in self.forms.values():
            query.addChild(form.toElement())
        return query

    def serialise(self) -> dict[str, Any]:
        """Plain data, for the bridge."""
        return {
            "identities": [i.serialise() for i in self.identities],
            "features": list(self.features),
            "forms": {ns: form_fields(form) for ns, form in self.forms.items()},
            "truncated": self.truncated,
        }


@dataclass(frozen=True)
class DiscoItem:
    """One item an entity lists (disco#items).

    ``jid`` is required by the protocol, but an item without a valid one is kept (with
    ``None``): a caller counting items (the ids of a pubsub node) must see them all.
    """

    jid: jabber_jid.JID | None
    node: str | None = None
    name: str | None = None

    def serialise(self) -> dict[str, str | None]:
        return {"jid": self.jid.full() if self.jid else None, "node": self.node,
                "name": self.name}


#: a plugin's answer for one of its nodes: ``callback(client, requestor, node)`` gives
#: the node's info, or ``None`` if the node is not the plugin's
NodeInfoProvider = Callable[[Client, jabber_jid.JID | None, str], DiscoInfo | None]
#: key of a cached disco#info: (profile, entity, node)
CacheKey = tuple[str, str, str | None]


class InfoCache:
    """disco#info answers in memory, least recently used dropped first."""

    def __init__(self, ttl: float, size: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        #: key -> (time it expires or None, info)
        self._entries: OrderedDict[CacheKey, tuple[float | None, DiscoInfo]] = OrderedDict()

    def get(self, key: CacheKey) -> DiscoInfo | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, info = entry
        if expires is not None and expires <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return info

    def set(self, key: CacheKey, info: DiscoInfo, keep: bool = False) -> None:
        """Cache ``info``; ``keep``: until dropped, instead of ``ttl`` seconds."""
        self._entries[key] = (None if keep else self.clock() + self.ttl, info)
        self._entries.move_to_end(key)
        profile_keys = [k for k in self._entries if k[0] == key[0]]
        for old in profile_keys[:max(0, len(profile_keys) - self.size)]:
            del self._entries[old]

    def drop(self, profile: str, entity: str | None = None) -> None:
        """Forget a profile's entries, or those of one of its entities."""
        for key in [k for k in self._entries
                    if k[0] == profile and (entity is None or k[1] == entity)]:
            del self._entries[key]


def check_request(entity: Any, node: Any) -> tuple[jabber_jid.JID, str | None]:
    """The JID and node of a request, checked.

    :raise InvalidDiscoRequest: not a valid JID, or a node that can't be sent
    """
    if isinstance(entity, str):
        entity = jid_or_none(entity)
    if not isinstance(entity, jabber_jid.JID):
        raise InvalidDiscoRequest("the entity must be a valid JID, e.g. example.org")
    if node is not None and (not isinstance(node, str) or not node
                             or len(node) > MAX_NODE or NOT_XML_CHAR.search(node)):
        raise InvalidDiscoRequest(f"a node must be a non-empty text of at most {MAX_NODE} "
                                  "characters XML allows")
    return entity, node or None


def disco_error(exc: BaseException, entity: jabber_jid.JID, node: str | None,
                timeout: float | None) -> BaseException:
    """A stanza error or a time-out as a :class:`DiscoError` naming the entity."""
    where = f"node {node!r} of {entity.full()}" if node else entity.full()
    if isinstance(exc, defer.TimeoutError):
        return DiscoTimeout(f"{where} did not answer within {timeout} seconds")
    if not isinstance(exc, jabber_error.StanzaError):
        return exc
    text = f": {exc.text}" if exc.text else ""
    if exc.condition == "item-not-found":
        return DiscoNotFound(f"{where} not found{text}", exc.condition)
    return DiscoError(f"{where} answered with an error: {exc.condition}{text}",
                      exc.condition)


class XEP_0030:  # noqa: N801
    """Service discovery; ``host.plugins["XEP-0030"]``."""

    def __init__(self, host: ConnectionHost) -> None:
        self.host = host
        section = host.config.plugin_section(IMPORT_NAME)
        self.identity = Identity(section.get_str("identity_category"),
                                 section.get_str("identity_type"),
                                 section.get_str("identity_name"))
        self.cache = InfoCache(section.get_int("cache_ttl"), section.get_int("cache_size"),
                               host.reactor.seconds)
        self._features: list[str] = []
        self._node_providers: list[NodeInfoProvider] = []
        self._feature_listeners: list[Callable[[], None]] = []
        #: requests being answered, shared by whoever asks the same meanwhile
        self._pending = SharedCalls()
        host.bridge.register_method("disco_info", self._bridge_info)
        host.bridge.register_method("disco_items", self._bridge_items)

    # what the backend says of itself

    def add_feature(self, feature: str) -> None:
        """Announce ``feature`` (a namespace) in the profiles' disco#info.

        Added while profiles are connected, it changes what they announce: the
        listeners of :meth:`add_features_listener` are told (XEP-0115 sends the
        presences again with the new hash).
        """
        if not isinstance(feature, str) or not feature or NOT_XML_CHAR.search(feature):
            raise ValueError(f"invalid feature {feature!r}")
        if feature not in self._features:
            self._features.append(feature)
            self._features_changed()

    def add_features_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` each time the features announced change."""
        self._feature_listeners.append(listener)

    def _features_changed(self) -> None:
        for listener in list(self._feature_listeners):
            try:
                listener()
            except Exception:
                # one listener's bug must not keep the others uninformed
                log.failure("a listener of the announced features failed")

    def add_notify(self, node: str) -> None:
        """Ask for the PEP notifications of ``node`` (XEP-0163): ``NODE+notify``."""
        self.add_feature(node + NOTIFY_SUFFIX)

    def add_node_info(self, provider: NodeInfoProvider) -> None:
        """Answer disco#info requests for nodes of a plugin (see
        :data:`NodeInfoProvider`)."""
        self._node_providers.append(provider)

    def own_features(self) -> list[str]:
        """Every feature announced: the core's, the plugins', those added; sorted."""
        features = set(CORE_FEATURES) | set(self._features)
        for info in self.host.plugin_manager.loaded_infos():
            features.update(info.features)
            features.update(n + NOTIFY_SUFFIX for n in info.notify)
        return sorted(features)

    def own_info(self) -> DiscoInfo:
        """What a profile answers to a disco#info request without node."""
        return DiscoInfo([self.identity], self.own_features())

    def node_info(self, client: Client, requestor: jabber_jid.JID | None,
                  node: str | None) -> DiscoInfo | None:
        """What a profile answers for ``node`` (``None``: no such node)."""
        if node is None:
            return self.own_info()
        for provider in self._node_providers:
            info = provider(client, requestor, node)
            if info is not None:
                return info
        return None

    # asking others

    @staticmethod
    def _query(namespace: str, node: str | None) -> domish.Element:
        query = domish.Element((namespace, "query"))
        if node:
            query["node"] = node
        return query

    @staticmethod
    def _key(client: Client, entity: jabber_jid.JID, node: str | None) -> CacheKey:
        return (client.profile.name, entity.full(), node or None)

    def cached_info(self, client: Client, entity: jabber_jid.JID,
                    node: str | None = None) -> DiscoInfo | None:
        """The cached disco#info of ``entity`` (or one of its nodes), if any."""
        return self.cache.get(self._key(client, entity, node))

    def set_info(self, client: Client, entity: jabber_jid.JID, info: DiscoInfo,
                 node: str | None = None, keep: bool = False) -> None:
        """Cache what ``entity`` is (entity capabilities give it without asking).

        :param keep: until :meth:`forget`, not ``cache_ttl`` seconds
        """
        self.cache.set(self._key(client, entity, node), info, keep)

    def forget(self, client: Client, entity: jabber_jid.JID | None = None) -> None:
        """Drop the cached disco#info of ``entity`` (every node), or of every entity."""
        self.cache.drop(client.profile.name, entity.full() if entity else None)

    async def get_info(self, client: Client, entity: jabber_jid.JID, node: str | None = None,
                       timeout: float | None = DEFAULT_TIMEOUT,
                       use_cache: bool = True) -> DiscoInfo:
        """What ``entity`` (or one of its nodes) is and supports.

        :param use_cache: answer from the cache when it holds the answer; otherwise
            ask, and cache the answer (unless it was over the bounds)
        :raise twisted.words.protocols.jabber.error.StanzaError: the entity answered
            with an error (``item-not-found`` for a node it does not have)
        :raise twisted.internet.defer.TimeoutError: no answer within ``timeout`` seconds
        """
        key = self._key(client, entity, node)
        if use_cache:
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        # the same request on its way: its answer will do
        info = await self._pending.run(
            key, lambda: self._ask_info(client, entity, node, timeout))
        if not info.truncated:
            self.cache.set(key, info)
        else:
            log.warn("the disco#info of {entity} is over the bounds ({identities} "
                     "identities, {features} features, {forms} forms at most): "
                     "truncated, not cached", entity=entity.full(),
                     identities=MAX_IDENTITIES, features=MAX_FEATURES, forms=MAX_FORMS)
        return info

    async def _ask_info(self, client: Client, entity: jabber_jid.JID, node: str | None,
                        timeout: float | None) -> DiscoInfo:
        return DiscoInfo.from_element(await self.ask_info_element(client, entity, node,
                                                                  timeout))

    async def ask_info_element(self, client: Client, entity: jabber_jid.JID,
                               node: str | None = None,
                               timeout: float | None = DEFAULT_TIMEOUT
                               ) -> domish.Element | None:
        """The ``<query/>`` of ``entity``'s disco#info answer as received, ``None`` if
        it has none (for those who check it whole: XEP-0115 hashes it); not cached.

        :raise twisted.words.protocols.jabber.error.StanzaError: the entity answered
            with an error
        :raise twisted.internet.defer.TimeoutError: no answer within ``timeout`` seconds
        """
        iq = await client.request(IQRequest(entity, "get",
                                            self._query(NS_DISCO_INFO, node), timeout))
        return next(iq.elements(NS_DISCO_INFO, "query"), None)

    async def get_items(self, client: Client, entity: jabber_jid.JID,
                        node: str | None = None,
                        timeout: float | None = DEFAULT_TIMEOUT) -> list[DiscoItem]:
        """The items ``entity`` (or one of its nodes) lists, in its order (not cached:
        a pubsub node's items change).

        :raise twisted.words.protocols.jabber.error.StanzaError: the entity answered
            with an error
        :raise twisted.internet.defer.TimeoutError: no answer within ``timeout`` seconds
        """
        iq = await client.request(IQRequest(entity, "get",
                                            self._query(NS_DISCO_ITEMS, node), timeout))
        query = next(iq.elements(NS_DISCO_ITEMS, "query"), None)
        items = []
        for item in query.elements(NS_DISCO_ITEMS, "item") if query is not None else ():
            items.append(DiscoItem(jid_or_none(item.getAttribute("jid")),
                                   item.getAttribute("node") or None,
                                   item.getAttribute("name") or None))
        return items

    # bridge

    async def _bridge_info(self, profile: str, jid: str, node: str | None = None,
                           use_cache: bool = True) -> dict[str, Any]:
        """What an entity is and supports (disco#info), from the cache when it holds it."""
        entity, node = check_request(jid, node)
        client = self.host.clients.get(profile)
        try:
            info = await self.get_info(client, entity, node, use_cache=use_cache)
        except (jabber_error.StanzaError, defer.TimeoutError) as e:
            raise disco_error(e, entity, node, DEFAULT_TIMEOUT) from None
        return {"jid": entity.full(), "node": node} | info.serialise()

    async def _bridge_items(self, profile: str, jid: str, node: str | None = None
                            ) -> dict[str, Any]:
        """The items an entity (or one of its nodes) lists (disco#items)."""
        entity, node = check_request(jid, node)
        client = self.host.clients.get(profile)
        try:
            items = await self.get_items(client, entity, node)
        except (jabber_error.StanzaError, defer.TimeoutError) as e:
            raise disco_error(e, entity, node, DEFAULT_TIMEOUT) from None
        return {"jid": entity.full(), "node": node,
                "items": [item.serialise() for item in items]}

    # plugin hooks

    def get_handler(self, client: Client) -> "DiscoHandler":
        return DiscoHandler(self, client)

    def profile_disconnected(self, client: Client) -> None:
        """What others said may change while the profile is away."""
        self.forget(client)


class DiscoHandler(XMPPHandler):
    """Answers the disco#info and disco#items requests addressed to one profile."""

    def __init__(self, disco: XEP_0030, client: Client) -> None:
        super().__init__()
        self.disco = disco
        self.client = client

    def connectionInitialized(self) -> None:  # noqa: N802 (Wokkel API)
        self.xmlstream.addObserver(f'/iq/query[@xmlns="{NS_DISCO_INFO}"]', self._on_info)
        self.xmlstream.addObserver(f'/iq/query[@xmlns="{NS_DISCO_ITEMS}"]',
                                   self._on_items)

    def _own_jids(self) -> set[str]:
        jids = {self.client.jid.userhost()}
        bound = getattr(self.client, "bound_jid", None)
        if bound is not None:
            jids.update((bound.full(), bound.userhost()))
        return jids

    def _request(self, iq: domish.Element, namespace: str
                 ) -> tuple[jabber_jid.JID | None, str | None] | None:
        """``(requestor, node)`` of a request for this profile, else ``None`` (after
        answering an error where one is due)."""
        if iq.getAttribute("type") not in ("get", "set"):
            return None  # answers are the requests' business
        to = iq.getAttribute("to")
        if to is not None and to not in self._own_jids():
            return None
        iq.handled = True
        if iq.getAttribute("type") == "set":
            self._error(iq, "bad-request")
            return None
        requestor = jid_or_none(iq.getAttribute("from"))
        node = next(iq.elements(namespace, "query")).getAttribute("node") or None
        if node is not None and (len(node) > MAX_NODE or NOT_XML_CHAR.search(node)):
            self._error(iq, "item-not-found")
            return None
        return requestor, node

    def _on_info(self, iq: domish.Element) -> None:
        request = self._request(iq, NS_DISCO_INFO)
        if request is None:
            return
        requestor, node = request
        try:
            info = self.disco.node_info(self.client, requestor, node)
        except Exception:
            log.failure("can't tell what node {node} is", node=node)
            self._error(iq, "internal-server-error")
            return
        if info is None:
            self._error(iq, "item-not-found")
            return
        self._answer(iq, info.to_element(node))

    def _on_items(self, iq: domish.Element) -> None:
        request = self._request(iq, NS_DISCO_ITEMS)
        if request is None:
            return
        __, node = request
        if node is not None:
            self._error(iq, "item-not-found")
            return
        # a client lists nothing
        self._answer(iq, domish.Element((NS_DISCO_ITEMS, "query")))

    def _answer(self, iq: domish.Element, query: domish.Element) -> None:
        response = xmlstream.toResponse(iq, "result")
        response.addChild(query)
        self.send(response)

    def _error(self, iq: domish.Element, condition: str) -> None:
        self.send(jabber_error.StanzaError(condition).toResponse(iq))

