"""XEP-0115: Entity Capabilities, what a contact supports without asking each time.

The backend's own: every available presence a profile sends carries
``<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node=... ver=.../>`` (added on
the ``presence_send`` trigger point, which the presence plugin fires), ``ver`` being
the hash of what the profile answers to disco#info (:func:`caps_hash`); the profile
answers disco#info for ``node#ver`` as it does without node.

The contacts': when a presence announces a hash, the disco#info it stands for is
found in memory, else in the database (``storage.caps``), else asked once of the
entity (node ``node#ver``) and *verified*: it is kept under the hash only if hashing it
gives the hash announced, and only if it is within XEP-0030's bounds.  Whatever the
source, the entity's disco#info is then in the XEP-0030 plugin's cache until its
capabilities change (a new hash, or an unavailable presence).
"""

import base64
import hashlib
from collections import OrderedDict
from typing import Any

from twisted.internet import defer
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import data_form
from wokkel.subprotocols import XMPPHandler

from libervia.backend.core.async_utils import SharedCalls
from libervia.backend.core.config import declare, parse_str
from libervia.backend.core.constants import C
from libervia.backend.core.interfaces import Client
from libervia.backend.core.jids import jid_or_none
from libervia.backend.core.log import getLogger
from libervia.backend.core.xml_tools import NOT_XML_CHAR, XMLError, parse_xml
from libervia.backend.memory.storage import StorageError
from libervia.backend.plugins.plugin_xep_0030 import (
    NS_DISCO_INFO,
    NS_XML,
    XEP_0030,
    DiscoInfo,
)
from libervia.backend.xmpp.clients import ConnectionHost

log = getLogger(__name__)

IMPORT_NAME = "XEP-0115"
SECTION = f"plugin {IMPORT_NAME}"
NS_CAPS = "http://jabber.org/protocol/caps"
#: trigger point the presence plugin fires before an available presence goes out,
#: with ``(client, presence)``
PRESENCE_SEND = "presence_send"
#: hash functions a ``ver`` may be made with (IANA names, as XEP-0115 uses them)
HASH_FUNCTIONS = {"sha-1": hashlib.sha1, "sha-224": hashlib.sha224,
                  "sha-256": hashlib.sha256, "sha-384": hashlib.sha384,
                  "sha-512": hashlib.sha512}
#: the one the backend announces (the one every client understands)
OWN_HASH = "sha-1"
#: longest ``ver`` and ``node`` considered
MAX_VER = 255
MAX_NODE = 1024
#: largest disco#info kept under a hash (characters of its XML)
MAX_INFO_SIZE = 65536
#: hashes kept in memory, and hashes known to be wrong (not asked again)
MEMORY_SIZE = 1000
#: seconds an entity may take to say what a hash stands for
RESOLVE_TIMEOUT = 20

PLUGIN_INFO = {
    "name": "Entity capabilities",
    "import_name": "XEP-0115",
    "type": C.PLUG_TYPE_XEP,
    "modes": [C.PLUG_MODE_CLIENT],
    "protocols": ["XEP-0115"],
    "dependencies": ["XEP-0030"],
    "recommendations": [],
    "main": "XEP_0115",
    "handler": True,
    "features": [NS_CAPS],
    "description": "Entity capabilities: the backend's own in each presence, contacts' "
                   "verified once and kept.",
}


def _node(value: str) -> str:
    value = parse_str(value).strip()
    if not value or len(value) > MAX_NODE or NOT_XML_CHAR.search(value):
        raise ValueError("expected a URI")
    return value


declare(SECTION, "node", _node, "https://libervia.org",
        "The ``node`` of the backend's entity capabilities: the URI of the software.")


class InvalidCaps(ValueError):
    """A disco#info XEP-0115 forbids hashing (duplicates, a form twice...)."""


def _field_values(field: domish.Element) -> list[str]:
    return [str(v) for v in field.elements(data_form.NS_X_DATA, "value")]


def verification_string(query: domish.Element) -> str:
    """The string XEP-0115 hashes (its section 5.1) for a disco#info ``<query/>``.

    :raise InvalidCaps: two identical identities or features, or two forms of one
        ``FORM_TYPE`` (section 5.4: such an answer must not be trusted)
    """
    identities = []
    for identity in query.elements(NS_DISCO_INFO, "identity"):
        identities.append("/".join(identity.getAttribute(a) or "" for a in (
            "category", "type", (NS_XML, "lang"), "name")))
    features = [f.getAttribute("var") or "" for f in query.elements(NS_DISCO_INFO,
                                                                    "feature")]
    if len(set(identities)) < len(identities):
        raise InvalidCaps("the same identity is given twice")
    if len(set(features)) < len(features):
        raise InvalidCaps("the same feature is given twice")
    forms: dict[str, str] = {}
    for form in query.elements(data_form.NS_X_DATA, "x"):
        fields = list(form.elements(data_form.NS_X_DATA, "field"))
        form_type = [f for f in fields if f.getAttribute("var") == "FORM_TYPE"]
        if not form_type or form_type[0].getAttribute("type") != "hidden":
            continue  # not an extension form: left out of the hash
        types = set(_field_values(form_type[0]))
        if len(types) != 1:
            raise InvalidCaps("a FORM_TYPE without one value")
        (namespace,) = types
        if namespace in forms:
            raise InvalidCaps(f"two forms of FORM_TYPE {namespace}")
        parts = [namespace]
        others = sorted((f for f in fields if f.getAttribute("var") != "FORM_TYPE"),
                        key=lambda f: f.getAttribute("var") or "")
        for field in others:
            parts.append(field.getAttribute("var") or "")
            parts.extend(sorted(_field_values(field)))
        forms[namespace] = "".join(p + "<" for p in parts)
    return ("".join(i + "<" for i in sorted(identities))
            + "".join(f + "<" for f in sorted(features))
            + "".join(forms[ns] for ns in sorted(forms)))


def caps_hash(query: domish.Element, algo: str = OWN_HASH) -> str:
    """The ``ver`` of a disco#info ``<query/>``: base64 of its verification string's
    hash.

    :raise InvalidCaps: the answer can't be hashed (see :func:`verification_string`)
    :raise KeyError: ``algo`` is not one of :data:`HASH_FUNCTIONS`
    """
    digest = HASH_FUNCTIONS[algo](verification_string(query).encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii")


class _Bounded(OrderedDict):
    """A mapping forgetting its oldest entries beyond ``size``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


#: (hash function, ver)
CapsKey = tuple[str, str]


class XEP_0115:  # noqa: N801
    """Entity capabilities; ``host.plugins["XEP-0115"]``."""

    def __init__(self, host: ConnectionHost) -> None:
        self.host = host
        self.disco: XEP_0030 = host.plugins["XEP-0030"]
        self.node = host.config.plugin_section(IMPORT_NAME).get_str("node")
        #: what verified hashes stand for
        self._verified: _Bounded = _Bounded(MEMORY_SIZE)
        #: hashes whose disco#info did not hash to them
        self._wrong: _Bounded = _Bounded(MEMORY_SIZE)
        #: hashes being resolved
        self._resolving = SharedCalls()
        #: each entity's announced hash: {(profile, full JID): key}
        self._entities: dict[tuple[str, str], CapsKey] = {}
        self._tasks: set[defer.Deferred] = set()
        #: the own hash, and the disco#info it was computed for
        self._ver: tuple[DiscoInfo, str] | None = None
        #: the own hash of the last presence sent
        self._announced_ver: str | None = None
        self.disco.add_node_info(self._node_info)
        self.disco.add_features_listener(self._on_features_changed)
        host.trigger.add(PRESENCE_SEND, self._on_presence_send)

    # the backend's own

    def own_query(self) -> domish.Element:
        """The disco#info ``<query/>`` the profiles answer."""
        return self.disco.own_info().to_element()

    @property
    def ver(self) -> str:
        """The backend's own ``ver`` (it changes when a plugin adds a feature)."""
        info = self.disco.own_info()
        if self._ver is None or self._ver[0] != info:
            # hashed again only when what the profiles answer changed
            self._ver = (info, caps_hash(info.to_element(), OWN_HASH))
        return self._ver[1]

    def caps_element(self) -> domish.Element:
        """The ``<c/>`` element of the profiles' presences."""
        caps = domish.Element((NS_CAPS, "c"))
        caps["hash"], caps["node"], caps["ver"] = OWN_HASH, self.node, self.ver
        self._announced_ver = caps["ver"]
        return caps

    def _on_features_changed(self) -> None:
        """A feature was added: the presences that carried the old hash are sent
        again with the new one (XEP-0115 §4), so that contacts ask what it stands
        for.  Profiles whose initial presence is still to come send the new one."""
        if self._announced_ver is None or self.ver == self._announced_ver:
            return
        log.info("own capabilities changed ({old} -> {new}): presences sent again",
                 old=self._announced_ver, new=self.ver)
        presence = self.host.plugins.get("PRESENCE")
        if presence is not None:
            presence.announce_again()

    def _on_presence_send(self, client: Client, presence: domish.Element) -> bool:
        if presence.getAttribute("type") in (None, "available") and not any(
                True for __ in presence.elements(NS_CAPS, "c")):
            presence.addChild(self.caps_element())
        return True

    def _node_info(self, client: Client, requestor: jabber_jid.JID | None, node: str
                   ) -> DiscoInfo | None:
        if node == f"{self.node}#{self.ver}":
            return self.disco.own_info()
        return None

    # contacts'

    def entity_caps(self, client: Client, entity: jabber_jid.JID) -> CapsKey | None:
        """``(hash function, ver)`` ``entity`` announced last, if any."""
        return self._entities.get((client.profile.name, entity.full()))

    def caps_info(self, key: CapsKey) -> DiscoInfo | None:
        """What a verified hash stands for, if known in memory."""
        return self._verified.get(key)

    async def wait_idle(self) -> None:
        """Wait until every resolution started by a presence has ended."""
        while self._tasks:
            await defer.DeferredList(list(self._tasks), consumeErrors=True)

    def on_presence(self, client: Client, presence: domish.Element) -> None:
        """A presence from someone: follow its capabilities."""
        sender = jid_or_none(presence.getAttribute("from"))
        if sender is None:
            return
        entity_key = (client.profile.name, sender.full())
        if presence.getAttribute("type") in ("unavailable", "error"):
            if self._entities.pop(entity_key, None) is not None:
                self.disco.forget(client, sender)
            return
        if presence.getAttribute("type") not in (None, "available"):
            return  # subscriptions
        caps = next(presence.elements(NS_CAPS, "c"), None)
        if caps is None:
            return
        algo, ver, node = (caps.getAttribute("hash"), caps.getAttribute("ver"),
                           caps.getAttribute("node"))
        if algo not in HASH_FUNCTIONS or not ver or not node or len(ver) > MAX_VER or len(
                node) > MAX_NODE:
            # legacy capabilities (no hash), or not ours to trust
            log.debug("ignoring capabilities of {entity} (hash {algo!r})",
                      entity=sender.full(), algo=algo)
            return
        key = (algo, ver)
        if self._entities.get(entity_key) == key:
            return
        if entity_key in self._entities:
            self.disco.forget(client, sender)  # its capabilities changed
        self._entities[entity_key] = key
        d = defer.ensureDeferred(self.resolve(client, sender, node, key))
        self._tasks.add(d)
        d.addErrback(lambda f: log.failure("can't resolve the capabilities of {entity}",
                                           f, entity=sender.full()))
        d.addBoth(lambda __: self._tasks.discard(d))

    async def resolve(self, client: Client, entity: jabber_jid.JID, node: str,
                      key: CapsKey) -> DiscoInfo | None:
        """What ``entity``'s hash stands for, now in the XEP-0030 cache for it;
        ``None`` if it could not be had (or did not verify)."""
        info = await self.verified_info(client, entity, node, key)
        if info is not None and self.entity_caps(client, entity) == key:
            self.disco.set_info(client, entity, info, keep=True)
        return info

    async def verified_info(self, client: Client, entity: jabber_jid.JID, node: str,
                            key: CapsKey) -> DiscoInfo | None:
        """The verified disco#info of a hash: from memory, the database, or ``entity``."""
        info = self._verified.get(key)
        if info is not None:
            return info
        if key in self._wrong:
            return None
        if key == (OWN_HASH, self.ver):
            return self.disco.own_info()  # one of our profiles, or another Libervia
        return await self._resolving.run(key, lambda: self._resolve(client, entity, node,
                                                                    key))

    async def _resolve(self, client: Client, entity: jabber_jid.JID, node: str,
                       key: CapsKey) -> DiscoInfo | None:
        info = await self._stored(key)
        if info is None:
            info = await self._ask(client, entity, node, key)
        return info

    async def _stored(self, key: CapsKey) -> DiscoInfo | None:
        try:
            text = await self.host.storage.caps.get_caps(*key)
        except StorageError as e:
            log.warn("can't read known capabilities ({error}): asking", error=e)
            return None
        if text is None:
            return None
        try:
            info = DiscoInfo.from_element(parse_xml(text))
        except XMLError:
            return None
        self._verified[key] = info
        return info

    async def _ask(self, client: Client, entity: jabber_jid.JID, node: str,
                   key: CapsKey) -> DiscoInfo | None:
        algo, ver = key
        try:
            query = await self.disco.ask_info_element(client, entity, f"{node}#{ver}",
                                                      RESOLVE_TIMEOUT)
        except (jabber_error.StanzaError, defer.TimeoutError) as e:
            log.info("{entity} did not say what its capabilities {ver} are: {error}",
                     entity=entity.full(), ver=ver, error=e)
            return None
        if query is None:
            return None
        info = DiscoInfo.from_element(query)
        try:
            actual = caps_hash(query, algo)
        except InvalidCaps as e:
            actual = f"nothing ({e})"
        text = query.toXml()
        if actual != ver or info.truncated or len(text) > MAX_INFO_SIZE:
            self._wrong[key] = True
            why = (f"it hashes to {actual}" if actual != ver
                   else "it is over the size bounds")
            log.warn("the disco#info of {entity} is not what its capabilities {ver} "
                     "stand for ({why}): not kept under that hash", entity=entity.full(),
                     ver=ver, why=why)
            if not info.truncated:
                self.disco.set_info(client, entity, info)
            return None
        self._verified[key] = info
        try:
            await self.host.storage.caps.set_caps(algo, ver, text)
        except StorageError as e:
            log.warn("can't keep the capabilities {ver} ({error}): they will be asked "
                     "again after a restart", ver=ver, error=e)
        return info

    # plugin hooks

    def get_handler(self, client: Client) -> "CapsHandler":
        return CapsHandler(self, client)

    def profile_disconnected(self, client: Client) -> None:
        name = client.profile.name
        for entity_key in [k for k in self._entities if k[0] == name]:
            del self._entities[entity_key]


class CapsHandler(XMPPHandler):
    """Follows the capabilities announced in the presences one profile receives."""

    def __init__(self, caps: XEP_0115, client: Client) -> None:
        super().__init__()
        self.caps = caps
        self.client = client

    def connectionInitialized(self) -> None:  # noqa: N802 (Wokkel API)
        self.xmlstream.addObserver("/presence", self._on_presence)

    def _on_presence(self, presence: domish.Element) -> None:
        try:
            self.caps.on_presence(self.client, presence)
        except Exception:
            log.failure("can't follow the capabilities of a presence")

