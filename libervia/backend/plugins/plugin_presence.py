"""RFC 6121 presence: the profile's own availability, and its contacts'.

What the plugin does for each connected profile:

* once the stream is up, it sends the *initial presence*, with the show, status and
  priority the profile stored (:meth:`Presence.set_presence` changes and stores them);
  before that it waits on the asynchronous trigger point :data:`TRIGGER_INITIAL` (the
  roster plugin fetches the roster there: RFC 6121 has the roster asked for before the
  presence is sent, so that the contacts' presences that follow find their roster
  items);
* each available presence it sends (initial, updated, directed) first goes through the
  trigger point :data:`TRIGGER_PRESENCE_SEND`: plugins add children to it (entity
  capabilities, XEP-0115);
* it tracks the presences received, per full JID, in memory only: they are stale once
  the stream is gone, and the server sends them again to the next initial presence;
  :meth:`Presence.get_presences` gives them, with the resource that wins;
* an unavailable presence is sent before the profile is disconnected on purpose.

What it receives comes from anyone: a presence with an invalid ``from``, a show it
does not know, a priority out of range or a huge status is logged and ignored or
bounded (:data:`MAX_STATUS`, :data:`MAX_RESOURCES`, :data:`MAX_ENTITIES`); nothing
raises to the stream.

Subscription requests (``subscribe``, ``subscribed``...) are presences too, but belong
to the roster: the roster plugin handles them, this one leaves them alone.
"""

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel.subprotocols import XMPPHandler

from libervia.backend.core.constants import C
from libervia.backend.core.exceptions import BackendError
from libervia.backend.core.interfaces import Client
from libervia.backend.core.jids import jid_or_none
from libervia.backend.core.log import getLogger
from libervia.backend.core.xml_tools import NOT_XML_CHAR
from libervia.backend.xmpp.profiles import StorageHost

log = getLogger(__name__)

PLUGIN_INFO = {
    "name": "Presence",
    "import_name": "PRESENCE",
    "type": C.PLUG_TYPE_MISC,
    "modes": [C.PLUG_MODE_CLIENT],
    "protocols": ["RFC 6121"],
    "dependencies": [],
    "recommendations": [],
    "main": "Presence",
    "handler": True,
    "description": "Presence: the profile's availability, and its contacts'.",
}

#: plain trigger point fired just before an available presence (initial, updated or
#: directed) is sent, with ``(client, presence)``, the ``<presence/>`` element about
#: to go out: callbacks add children to it and return ``True``.  The presence goes out
#: whatever they answer: ``False`` (or an exception, which is logged) only stops the
#: callbacks after it
TRIGGER_PRESENCE_SEND = "presence_send"
#: asynchronous trigger point awaited before the initial presence of each stream, with
#: ``(client)``: the roster plugin fetches the roster there.  What callbacks answer does
#: not matter; the presence goes out after :data:`INITIAL_WAIT` seconds at most
TRIGGER_INITIAL = "presence_initial"
#: plain trigger point fired for each presence received that is not a subscription
#: request, with ``(client, presence)``, the element: a callback returning ``False``
#: claims it (a group chat plugin, for its rooms' occupants), and it is not tracked
TRIGGER_PRESENCE_RECEIVED = "presence_received"
#: bridge signal: a presence was received (or an entity's presences were dropped)
PRESENCE_CHANGED_SIGNAL = "presence_changed"

#: what ``<show/>`` may say (no show: plainly available)
SHOWS = ("away", "chat", "dnd", "xa")
#: characters of a status kept (longer ones received are cut; longer ones set refused)
MAX_STATUS = 1024
#: resources tracked per bare JID; presences of more are dropped
MAX_RESOURCES = 64
#: bare JIDs tracked per profile; presences of more are dropped
MAX_ENTITIES = 10_000
#: seconds the initial presence waits for the callbacks of TRIGGER_INITIAL
INITIAL_WAIT = 60.0
#: where the profile's own presence is stored (private values of the profile)
STORAGE_NAMESPACE = "presence"
STORAGE_KEY = "own"

#: order of the shows when priorities are equal: the most available first
_SHOW_RANK = {"chat": 0, None: 1, "away": 2, "xa": 3, "dnd": 4}
_SUBSCRIPTION_TYPES = frozenset(("subscribe", "subscribed", "unsubscribe", "unsubscribed"))

Show = Literal["away", "chat", "dnd", "xa"]


class InvalidPresence(BackendError, ValueError):
    """A presence to set or a JID to look up is invalid; the message says which part."""


@dataclass(frozen=True)
class PresenceState:
    """An availability: ``show`` (``None``: plainly available), ``status``, ``priority``."""

    show: str | None = None
    status: str | None = None
    priority: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def checked(cls, show: Any, status: Any, priority: Any) -> "PresenceState":
        """A presence to send, from values given by a frontend or a plugin.

        :raise InvalidPresence: a value is not one RFC 6121 allows, or a stanza could
            not carry it
        """
        if show is not None and show not in SHOWS:
            raise InvalidPresence(
                f"unknown show {show!r}: use one of {', '.join(SHOWS)}, or none for "
                "available")
        if status is not None:
            if not isinstance(status, str):
                raise InvalidPresence("the status must be text")
            if len(status) > MAX_STATUS:
                raise InvalidPresence(
                    f"the status is {len(status)} characters long, more than "
                    f"{MAX_STATUS}: shorten it")
            if NOT_XML_CHAR.search(status):
                raise InvalidPresence(
                    "the status holds a character XML forbids (a control character or "
                    "a lone surrogate): remove it")
            status = status or None
        if priority is None:
            priority = 0
        if isinstance(priority, bool) or not isinstance(priority, int) or not (
                -128 <= priority <= 127):
            raise InvalidPresence(
                f"invalid priority {priority!r}: an integer from -128 to 127")
        return cls(show, status, priority)

    @classmethod
    def from_stored(cls, value: Any) -> "PresenceState":
        """The stored presence; what is unreadable in it is left at its default."""
        if not isinstance(value, dict):
            return cls()
        try:
            return cls.checked(value.get("show"), value.get("status"),
                               value.get("priority"))
        except InvalidPresence as e:
            log.warn("stored presence ignored: {error}", error=str(e))
            return cls()

    @classmethod
    def from_element(cls, presence: domish.Element) -> "PresenceState":
        """What a received presence says, bounded: an unknown show is taken as plainly
        available, an invalid priority as 0, a long status is cut."""
        show_elt = _child(presence, "show")
        show = str(show_elt).strip() if show_elt is not None else None
        if show not in SHOWS:
            show = None
        status = _status_text(presence)
        priority = 0
        priority_elt = _child(presence, "priority")
        if priority_elt is not None:
            try:
                value = int(str(priority_elt).strip())
            except ValueError:
                value = 0
            priority = value if -128 <= value <= 127 else 0
        return cls(show, status, priority)

    def to_element(self, type_: str | None = None) -> domish.Element:
        """A ``<presence/>`` saying this (of ``type_``: ``None`` for available)."""
        presence = domish.Element((None, "presence"))
        if type_ is not None:
            presence["type"] = type_
        if self.show is not None and type_ is None:
            presence.addElement("show", content=self.show)
        if self.status:
            presence.addElement("status", content=self.status)
        if self.priority and type_ is None:
            presence.addElement("priority", content=str(self.priority))
        return presence


def _child(presence: domish.Element, name: str) -> domish.Element | None:
    for child in presence.elements():
        if child.name == name and child.uri in (None, "jabber:client", ""):
            return child
    return None


def _status_text(presence: domish.Element) -> str | None:
    """The status of a received presence: the one without language first (RFC 6121
    allows one per language), bounded to :data:`MAX_STATUS` characters."""
    statuses = [c for c in presence.elements() if c.name == "status"
                and c.uri in (None, "jabber:client", "")]
    if not statuses:
        return None
    chosen = next((s for s in statuses if not s.getAttribute(
        ("http://www.w3.org/XML/1998/namespace", "lang"))), statuses[0])
    text = str(chosen)
    if len(text) > MAX_STATUS:
        text = text[:MAX_STATUS]
    return text or None


@dataclass
class ResourcePresence:
    """The presence of one resource of an entity, and when it came (reactor time)."""

    resource: str
    state: PresenceState
    received: float

    def to_dict(self) -> dict[str, Any]:
        return {"resource": self.resource, **self.state.to_dict()}


@dataclass
class EntityPresences:
    """The available resources of one bare JID."""

    resources: dict[str, ResourcePresence] = field(default_factory=dict)

    def best(self) -> ResourcePresence | None:
        """The resource that wins: highest priority, then the most available show,
        then the latest presence."""
        if not self.resources:
            return None
        return min(self.resources.values(), key=lambda r: (
            -r.state.priority, _SHOW_RANK.get(r.state.show, 1), -r.received))


def entity_dict(bare: str, entity: EntityPresences | None) -> dict[str, Any]:
    """What frontends get of one entity: its resources, and the one that wins."""
    resources = sorted(entity.resources.values(), key=lambda r: r.resource) if entity else []
    best = entity.best() if entity else None
    return {
        "jid": bare,
        "available": bool(resources),
        "best": best.resource if best else None,
        "resources": [r.to_dict() for r in resources],
    }


class PresenceHandler(XMPPHandler):
    """The presence side of one profile's stream."""

    def __init__(self, plugin: "Presence", client: Client) -> None:
        super().__init__()
        self.plugin = plugin
        self.client = client

    def connectionInitialized(self) -> None:  # noqa: N802 (Wokkel API)
        self.xmlstream.addObserver("/presence", self._on_presence)
        d = defer.ensureDeferred(self.plugin.send_initial(self.client, self.xmlstream))
        d.addErrback(lambda f: log.failure(
            "profile {profile}: initial presence failed", f,
            profile=self.client.profile.name))

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 (Wokkel API)
        self.plugin.forget_presences(self.client)

    def _on_presence(self, presence: domish.Element) -> None:
        try:
            self.plugin.on_presence(self.client, presence)
        except Exception:
            log.failure("profile {profile}: error while handling a presence",
                        profile=self.client.profile.name)


class Presence:
    """Presence of the profiles and of their contacts; ``host.plugins["PRESENCE"]``."""

    def __init__(self, host: StorageHost) -> None:
        self.host = host
        #: own presence of each profile, by profile name (loaded at the first use)
        self._own: dict[str, PresenceState] = {}
        #: presences received, by profile name, then bare JID
        self._presences: dict[str, dict[str, EntityPresences]] = {}
        #: the stream on which the initial presence went, by profile name
        self._announced: dict[str, Any] = {}
        host.bridge.register_signal(
            PRESENCE_CHANGED_SIGNAL,
            "a presence was received: params {profile, jid (full), available, show, "
            "status, priority}")
        host.bridge.register_method("presence_set", self._bridge_set)
        host.bridge.register_method("presence_get", self._bridge_get)

    def get_handler(self, client: Client) -> XMPPHandler:
        return PresenceHandler(self, client)

    # own presence

    async def get_own(self, client: Client) -> PresenceState:
        """The profile's own presence (as stored: the last one set)."""
        return await self._own_of(client.profile.name)

    async def _own_of(self, name: str) -> PresenceState:
        own = self._own.get(name)
        if own is None:
            values = await self.host.storage.profiles.get_privates(
                STORAGE_NAMESPACE, [STORAGE_KEY], profile=name)
            own = self._own.setdefault(name, PresenceState.from_stored(
                values.get(STORAGE_KEY)))
        return own

    async def set_presence(self, client: Client, show: str | None = None,
                           status: str | None = None, priority: int | None = 0
                           ) -> PresenceState:
        """Change the profile's presence: stored (the next connections start with it),
        and sent now if the initial presence was sent on this stream.

        :raise InvalidPresence: a value RFC 6121 does not allow
        """
        state = await self._store(client.profile.name,
                                  PresenceState.checked(show, status, priority))
        if client.is_connected and self._announced.get(client.profile.name) is not None:
            self.send_presence(client)
        return state

    async def _store(self, name: str, state: PresenceState) -> PresenceState:
        """Keep ``state`` as the presence of profile ``name``.

        :raise NotFound: no such profile
        """
        await self.host.storage.profiles.set_private_value(
            STORAGE_NAMESPACE, STORAGE_KEY, state.to_dict(), profile=name)
        self._own[name] = state
        return state

    def send_presence(self, client: Client, to: jabber_jid.JID | None = None) -> None:
        """Send the profile's current presence: broadcast, or directed to ``to``.

        Plugins whose contribution to the presence changed (new capabilities) call it
        to have it sent again.
        """
        state = self._own.get(client.profile.name, PresenceState())
        presence = state.to_element()
        if to is not None:
            presence["to"] = to.full()
        self._fire_send(client, presence)
        client.send(presence)

    def announce_again(self) -> list[str]:
        """Send again the presence of each profile whose initial presence went out on
        its current stream, with what the :data:`TRIGGER_PRESENCE_SEND` callbacks add
        now: a plugin's contribution changed (XEP-0115: new capabilities).  The other
        profiles' initial presence will carry it.

        :return: the names of the profiles whose presence was sent
        """
        sent = []
        for name, xs in list(self._announced.items()):
            if not self.host.clients.is_connected(name):
                continue
            client = self.host.clients.get(name)
            if getattr(client, "xmlstream", None) is not xs:
                continue  # a new stream: its initial presence is on its way
            self.send_presence(client)
            sent.append(name)
        return sent

    def _fire_send(self, client: Client, presence: domish.Element) -> None:
        try:
            self.host.trigger.point(TRIGGER_PRESENCE_SEND, client, presence)
        except Exception:
            # a plugin's bug must not keep the profile unavailable
            log.failure("profile {profile}: a {point} callback failed; the presence goes "
                        "out without what the callbacks after it add",
                        profile=client.profile.name, point=TRIGGER_PRESENCE_SEND)

    async def send_initial(self, client: Client, xs: Any) -> None:
        """The initial presence of the stream ``xs``, once the callbacks of
        :data:`TRIGGER_INITIAL` are done (the roster received)."""
        name = client.profile.name
        self._announced.pop(name, None)
        await self.get_own(client)
        d = defer.ensureDeferred(self.host.trigger.async_point(TRIGGER_INITIAL, client))
        d.addTimeout(INITIAL_WAIT, self.host.reactor)
        try:
            await d
        except defer.TimeoutError:
            log.warn("profile {profile}: what the initial presence waits for took more "
                     "than {delay} s; sending it now", profile=name, delay=INITIAL_WAIT)
        except Exception:
            log.failure("profile {profile}: a {point} callback failed; sending the "
                        "initial presence anyway", profile=name, point=TRIGGER_INITIAL)
        if getattr(client, "xmlstream", None) is not xs:
            return  # that stream is gone: the next one sends its own
        self._announced[name] = xs
        self.send_presence(client)

    async def profile_connecting(self, client: Client) -> None:
        """Read the profile's presence before its stream is up: the initial presence
        then waits for nothing but the callbacks of :data:`TRIGGER_INITIAL`."""
        await self.get_own(client)

    async def profile_disconnecting(self, client: Client) -> None:
        """Say the profile leaves before its stream is closed."""
        name = client.profile.name
        if client.is_connected and self._announced.pop(name, None) is not None:
            client.send(domish.Element((None, "presence"), attribs={"type": "unavailable"}))

    def profile_disconnected(self, client: Client) -> None:
        self._announced.pop(client.profile.name, None)
        self.forget_presences(client)

    # contacts' presences

    def on_presence(self, client: Client, presence: domish.Element) -> None:
        """A presence received on ``client``'s stream: tracked, and signalled."""
        type_ = presence.getAttribute("type")
        if type_ in _SUBSCRIPTION_TYPES or type_ == "probe":
            return  # the roster's, or the server's business
        name = client.profile.name
        sender = jid_or_none(presence.getAttribute("from"))
        if sender is None:
            log.info("profile {profile}: presence without a valid sender ignored",
                     profile=name)
            return
        if not self.host.trigger.point(TRIGGER_PRESENCE_RECEIVED, client, presence):
            return
        presence.handled = True
        bare, resource = sender.userhost(), sender.resource or ""
        entities = self._presences.setdefault(name, {})
        if type_ in ("unavailable", "error"):
            entity = entities.get(bare)
            if entity is None or entity.resources.pop(resource, None) is None:
                return
            if not entity.resources:
                del entities[bare]
            state = PresenceState.from_element(presence) if type_ == "unavailable" else (
                PresenceState())
            self._signal(name, sender, False, state)
            return
        if type_ is not None:
            log.info("profile {profile}: presence of unknown type {type!r} from {sender} "
                     "ignored", profile=name, type=type_[:32], sender=sender.full())
            return
        entity = entities.get(bare)
        if entity is None:
            if len(entities) >= MAX_ENTITIES:
                log.warn("profile {profile}: presences of more than {max} entities: the "
                         "one of {sender} is not tracked", profile=name, max=MAX_ENTITIES,
                         sender=bare)
                return
            entity = entities[bare] = EntityPresences()
        if resource not in entity.resources and len(entity.resources) >= MAX_RESOURCES:
            log.warn("profile {profile}: {sender} has more than {max} resources online: "
                     "the presence of one more is not tracked", profile=name,
                     sender=bare, max=MAX_RESOURCES)
            return
        state = PresenceState.from_element(presence)
        entity.resources[resource] = ResourcePresence(resource, state,
                                                      self.host.reactor.seconds())
        self._signal(name, sender, True, state)

    def _signal(self, profile: str, sender: jabber_jid.JID, available: bool,
                state: PresenceState) -> None:
        self.host.bridge.emit_signal(PRESENCE_CHANGED_SIGNAL, profile=profile,
                                     jid=sender.full(), available=available,
                                     **state.to_dict())

    def forget_presences(self, client: Client) -> None:
        """Drop what was received on ``client``'s stream (it is gone)."""
        self._presences.pop(client.profile.name, None)

    def get_entity(self, client: Client, entity: jabber_jid.JID) -> EntityPresences | None:
        """The available resources of ``entity``'s bare JID (``None``: unavailable)."""
        return self._presences.get(client.profile.name, {}).get(entity.userhost())

    def get_presences(self, client: Client, entity: jabber_jid.JID | None = None
                      ) -> list[dict[str, Any]]:
        """The presences received: of every entity available, or of ``entity`` only
        (its bare JID: every resource; a full JID: that resource)."""
        entities = self._presences.get(client.profile.name, {})
        if entity is None:
            return [entity_dict(bare, entities[bare]) for bare in sorted(entities)]
        bare = entity.userhost()
        found = entities.get(bare)
        if found is not None and entity.resource is not None:
            one = found.resources.get(entity.resource)
            found = EntityPresences({one.resource: one} if one else {})
        return [entity_dict(bare, found)]

    def available(self, client: Client, entities: Iterable[str]) -> dict[str, Any]:
        """The winning presence of each bare JID of ``entities`` that is available."""
        known = self._presences.get(client.profile.name, {})
        found = {}
        for bare in entities:
            entity = known.get(bare)
            best = entity.best() if entity is not None else None
            if best is not None:
                found[bare] = best.to_dict()
        return found

    # bridge methods

    async def _bridge_set(self, profile: str, show: Show | None = None,
                          status: str | None = None, priority: int = 0) -> dict[str, Any]:
        """Set the profile's presence (stored, and sent if it is connected)."""
        if not self.host.clients.is_connected(profile):
            # kept for the next connection, whose initial presence says it
            state = PresenceState.checked(show, status, priority)
            return (await self._store(profile, state)).to_dict()
        client = self.host.clients.get(profile)
        return (await self.set_presence(client, show, status, priority)).to_dict()

    async def _bridge_get(self, profile: str, jid: str | None = None) -> dict[str, Any]:
        """The profile's own presence, and its contacts' (or one's): ``{own,
        contacts: [{jid, available, best, resources: [{resource, show, status,
        priority}]}]}``."""
        entity = None
        if jid is not None:
            entity = jid_or_none(jid)
            if entity is None:
                raise InvalidPresence(f"invalid JID {jid[:100]!r}")
        own = await self._own_of(profile)  # NotFound for an unknown profile
        if not self.host.clients.is_connected(profile):
            # nothing received: every contact is unavailable
            return {"own": own.to_dict(),
                    "contacts": [entity_dict(entity.userhost(), None)] if entity else []}
        client = self.host.clients.get(profile)
        return {"own": own.to_dict(), "contacts": self.get_presences(client, entity)}

