"""The roster kept in step with the server, and subscriptions: what other plugins call
(:class:`Roster`), and the handler of each profile's stream."""

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish
from wokkel.subprotocols import XMPPHandler

from libervia.backend.core.exceptions import NotFound
from libervia.backend.core.interfaces import Client
from libervia.backend.core.jids import jid_or_none
from libervia.backend.core.log import getLogger
from libervia.backend.memory.storage import PendingRequest, RosterEntry, StoredRoster
from libervia.backend.plugins.plugin_presence import (
    MAX_STATUS,
    TRIGGER_INITIAL,
    Presence,
)
from libervia.backend.plugins.roster.stanzas import (
    MAX_ITEMS,
    NS_ROSTER,
    NS_ROSTER_VER,
    RosterError,
    checked_groups,
    checked_text,
    contact_jid,
    is_removal,
    item_query,
    parse_item,
    roster_query,
)
from libervia.backend.xmpp.iq import IQRequest
from libervia.backend.xmpp.profiles import StorageHost

log = getLogger(__name__)

#: bridge signal: a contact was added, changed or removed (``item`` is ``None``)
ROSTER_CHANGED_SIGNAL = "roster_changed"
#: bridge signal: a contact asks to see the profile's presence
SUBSCRIPTION_REQUEST_SIGNAL = "subscription_request"
#: subscription requests kept per profile; more are refused (with a log line)
MAX_PENDING = 1000
#: seconds to wait for the server's answer to a roster request
REQUEST_TIMEOUT = 30.0

T = TypeVar("T")


class RosterHandler(XMPPHandler):
    """The roster side of one profile's stream: pushes and subscription presences."""

    def __init__(self, plugin: "Roster", client: Client) -> None:
        super().__init__()
        self.plugin = plugin
        self.client = client

    def connectionInitialized(self) -> None:  # noqa: N802 (Wokkel API)
        self.xmlstream.addObserver(f'/iq[@type="set"]/query[@xmlns="{NS_ROSTER}"]',
                                   self._on_push)
        self.xmlstream.addObserver("/presence[@type]", self._on_presence)

    def _on_push(self, iq: domish.Element) -> None:
        iq.handled = True
        try:
            answer = self.plugin.on_push(self.client, iq)
        except Exception:
            log.failure("profile {profile}: error while handling a roster push",
                        profile=self.client.profile.name)
            answer = jabber_error.StanzaError("internal-server-error")
        if isinstance(answer, jabber_error.StanzaError):
            self.send(answer.toResponse(iq))
        else:
            self.send(xmlstream.toResponse(iq, "result"))

    def _on_presence(self, presence: domish.Element) -> None:
        try:
            self.plugin.on_subscription(self.client, presence)
        except Exception:
            log.failure("profile {profile}: error while handling a subscription presence",
                        profile=self.client.profile.name)


class Roster:
    """Rosters and subscriptions; ``host.plugins["ROSTER"]``."""

    def __init__(self, host: StorageHost) -> None:
        self.host = host
        self.storage = host.storage.roster
        self.presence: Presence = host.plugins["PRESENCE"]
        #: what changes a profile's stored roster runs one at a time, in arrival order
        self._locks: dict[str, defer.DeferredLock] = {}
        #: whether the server of each connected profile versions rosters
        self.versioning: dict[str, bool] = {}
        #: how the last fetch of each profile's roster went: ``full`` (the whole roster
        #: came), ``unchanged`` (not sent again: unchanged since the stored version) or
        #: ``failed`` (the stored one is used)
        self.last_fetch: dict[str, str] = {}
        host.trigger.add(TRIGGER_INITIAL, self._on_initial)
        host.bridge.register_signal(
            ROSTER_CHANGED_SIGNAL,
            "a contact was added, changed or removed: params {profile, jid, item "
            "({jid, name, subscription, ask, groups}, or null when removed)}")
        host.bridge.register_signal(
            SUBSCRIPTION_REQUEST_SIGNAL,
            "a contact asks to see the profile's presence: params {profile, jid, status}")

    def get_handler(self, client: Client) -> XMPPHandler:
        return RosterHandler(self, client)

    def _serial(self, name: str, func: Callable[[], Awaitable[T]]) -> defer.Deferred:
        """Run ``func`` once what was queued before for profile ``name`` is done."""
        lock = self._locks.setdefault(name, defer.DeferredLock())
        return lock.run(lambda: defer.ensureDeferred(func()))

    # the roster at connection

    async def _on_initial(self, client: Client) -> bool:
        await self.fetch(client)
        return True

    async def fetch(self, client: Client) -> None:
        """Bring the stored roster in step with the server's.

        When the server versions rosters (XEP-0237), the stored version is given: an
        unchanged roster is not sent again (its changes come as pushes).  A failure is
        logged: the stored roster stays as it was.
        """
        name = client.profile.name
        features = getattr(getattr(client, "xmlstream", None), "features", None) or {}
        versioned = (NS_ROSTER_VER, "ver") in features
        self.versioning[name] = versioned
        stored: StoredRoster = await self.storage.get_roster(name)
        # "" asks a versioning server for a first version
        version = (stored.version or "") if versioned else None
        try:
            iq = await client.request(IQRequest(None, "get", roster_query(version),
                                                REQUEST_TIMEOUT))
        except Exception as e:  # an error answer, a time-out, the stream lost
            log.warn("profile {profile}: the roster could not be fetched ({error}); the "
                     "stored one is used", profile=name, error=_describe(e))
            self.last_fetch[name] = "failed"
            return
        query = next(iq.elements(NS_ROSTER, "query"), None)
        if query is None:
            # RFC 6121 §2.6.3: unchanged since that version; the changes come as pushes
            log.info("profile {profile}: roster unchanged since version {version} "
                     "({count} contacts)", profile=name, version=version,
                     count=len(stored.items))
            self.last_fetch[name] = "unchanged"
            return
        items = _read_items(name, query)
        new_version = query.getAttribute("ver") if versioned else None
        await self._serial(name, lambda: self._replace(name, new_version, items))
        self.last_fetch[name] = "full"

    async def _replace(self, name: str, version: str | None,
                       items: list[RosterEntry]) -> None:
        old = {e.jid: e for e in (await self.storage.get_roster(name)).items}
        await self.storage.replace_roster(name, version, items)
        log.info("profile {profile}: roster received ({count} contacts, version "
                 "{version})", profile=name, count=len(items), version=version)
        new = {e.jid: e for e in items}
        for jid in sorted(old.keys() | new.keys()):
            if old.get(jid) != new.get(jid):
                self._signal(name, jid, new.get(jid))

    def _signal(self, name: str, jid: str, entry: RosterEntry | None) -> None:
        self.host.bridge.emit_signal(ROSTER_CHANGED_SIGNAL, profile=name, jid=jid,
                                     item=entry.to_dict() if entry else None)

    # what the server sends

    def on_push(self, client: Client, iq: domish.Element) -> jabber_error.StanzaError | None:
        """A roster push: checked, acknowledged, then applied to the stored roster.

        :return: the error to answer (the push is ignored), or ``None`` (result)
        """
        name = client.profile.name
        sender = iq.getAttribute("from")
        if sender is not None and not self._from_account(client, sender):
            # RFC 6121 §2.1.6: only the account's server may change the roster
            log.warn("profile {profile}: roster push from {sender} refused: only the "
                     "account's server may send one", profile=name, sender=sender[:200])
            return jabber_error.StanzaError("service-unavailable")
        query = next(iq.elements(NS_ROSTER, "query"))
        items = list(query.elements(NS_ROSTER, "item"))
        entry = parse_item(items[0]) if len(items) == 1 else None
        if entry is None:
            log.warn("profile {profile}: invalid roster push ignored ({count} items, "
                     "or an invalid JID)", profile=name, count=len(items))
            return jabber_error.StanzaError("bad-request")
        version = query.getAttribute("ver") if self.versioning.get(name) else None
        removed = is_removal(items[0])
        d = self._serial(name, lambda: self._apply(name, version, entry, removed))
        d.addErrback(lambda f: log.failure("profile {profile}: roster push not stored",
                                           f, profile=name))
        return None

    def _from_account(self, client: Client, sender: str) -> bool:
        parsed = jid_or_none(sender)
        own = client.jid.userhostJID()
        if parsed is None or parsed.userhostJID() != own:
            return False
        # the bare JID, as RFC 6121 says; some servers use the bound full JID
        bound = getattr(client, "bound_jid", None)
        return parsed.resource is None or (bound is not None and parsed == bound)

    async def _apply(self, name: str, version: str | None, entry: RosterEntry,
                     removed: bool) -> None:
        if removed:
            changed = await self.storage.apply_push(name, version, None, entry.jid)
            if changed:
                self._signal(name, entry.jid, None)
        else:
            await self.storage.apply_push(name, version, entry)
            self._signal(name, entry.jid, entry)

    def on_subscription(self, client: Client, presence: domish.Element) -> None:
        """A subscription presence: a request is kept until answered, a withdrawn one
        forgotten; answers to the profile's requests come with roster pushes."""
        type_ = presence.getAttribute("type")
        if type_ not in ("subscribe", "unsubscribe", "subscribed", "unsubscribed"):
            return
        presence.handled = True
        name = client.profile.name
        sender = jid_or_none(presence.getAttribute("from"))
        if sender is None:
            log.info("profile {profile}: {type} presence without a valid sender ignored",
                     profile=name, type=type_)
            return
        bare = sender.userhost()
        if type_ == "subscribe":
            status = _status(presence)
            d = self._serial(name, lambda: self._keep_request(name, bare, status))
        elif type_ == "unsubscribe":
            # the contact withdraws its request (or ends its subscription)
            d = self._serial(name, lambda: self.storage.del_pending(name, bare))
        else:
            log.info("profile {profile}: {sender} answered {type}", profile=name,
                     sender=bare, type=type_)
            return
        d.addErrback(lambda f: log.failure("profile {profile}: {type} from {sender} not "
                                           "stored", f, profile=name, type=type_,
                                           sender=bare))

    async def _keep_request(self, name: str, jid: str, status: str | None) -> None:
        if not await self.storage.add_pending(name, jid, status, MAX_PENDING):
            log.warn("profile {profile}: {max} subscription requests already wait for an "
                     "answer: the one of {sender} is dropped", profile=name,
                     max=MAX_PENDING, sender=jid)
            return
        self.host.bridge.emit_signal(SUBSCRIPTION_REQUEST_SIGNAL, profile=name, jid=jid,
                                     status=status)

    # what the profile asks

    async def get_roster(self, profile: str) -> list[dict[str, Any]]:
        """The stored roster of ``profile``, each contact with its presence (the
        winning resource, ``None`` when unavailable or not connected).

        :raise NotFound: no such profile
        """
        stored = await self.storage.get_roster(profile)
        presences: dict[str, Any] = {}
        if self.host.clients.is_connected(profile):
            client = self.host.clients.get(profile)
            presences = self.presence.available(client, [e.jid for e in stored.items])
        return [{**e.to_dict(), "presence": presences.get(e.jid)} for e in stored.items]

    async def get_entry(self, profile: str, jid: str) -> RosterEntry | None:
        """The stored contact ``jid`` (a bare JID) of ``profile``, if there is one."""
        stored = await self.storage.get_roster(profile)
        return next((e for e in stored.items if e.jid == jid), None)

    async def add(self, client: Client, jid: str, name: str | None = None,
                  groups: list[str] | None = None, subscribe: bool = True
                  ) -> dict[str, Any]:
        """Add (or change) a contact, and ask to see its presence.

        :raise InvalidRoster: invalid JID, name or groups
        :raise RosterError: the server refused it, or did not answer
        """
        entry = await self._set(client, contact_jid(jid), name, groups)
        if subscribe and entry.subscription in ("none", "from"):
            client.send(_presence(entry.jid, "subscribe"))
        return entry.to_dict()

    async def update(self, client: Client, jid: str, name: str | None = None,
                     groups: list[str] | None = None) -> dict[str, Any]:
        """Change the name or the groups of a contact.

        What is not given (``None``) is kept as it is; an empty name (``""``) or no
        groups (``[]``) remove them.

        :raise NotFound: not a contact of the roster
        :raise InvalidRoster: invalid JID, name or groups
        :raise RosterError: the server refused it, or did not answer
        """
        bare = contact_jid(jid)
        known = await self.get_entry(client.profile.name, bare)
        if known is None:
            raise NotFound(f"{bare} is not in the roster: add it first (li roster add)")
        return (await self._set(client, bare, known.name if name is None else name,
                                list(known.groups) if groups is None else groups)
                ).to_dict()

    async def _set(self, client: Client, jid: str, name: str | None,
                   groups: list[str] | None) -> RosterEntry:
        name = checked_text(name, "name") or None
        kept = checked_groups(groups)
        await self._request(client, item_query(jid, name, kept))
        profile = client.profile.name

        async def keep() -> RosterEntry:
            # the push telling the change may come after the answer: keep it now, with
            # the subscription the server last said
            known = await self.get_entry(profile, jid)
            entry = RosterEntry(jid, name, known.subscription if known else "none",
                                known.ask if known else False, kept)
            if entry != known:
                await self.storage.apply_push(profile, None, entry)
                self._signal(profile, jid, entry)
            return entry

        return await self._serial(profile, keep)

    async def remove(self, client: Client, jid: str) -> None:
        """Remove a contact: the server cancels both subscriptions (RFC 6121 §2.5).

        :raise NotFound: not a contact of the roster
        """
        bare = contact_jid(jid)
        profile = client.profile.name
        if await self.get_entry(profile, bare) is None:
            raise NotFound(f"{bare} is not in the roster")
        await self._request(client, item_query(bare, remove=True))

        async def forget() -> None:
            await self.storage.del_pending(profile, bare)
            if await self.storage.apply_push(profile, None, None, bare):
                self._signal(profile, bare, None)

        await self._serial(profile, forget)

    async def _request(self, client: Client, query: domish.Element) -> None:
        try:
            await client.request(IQRequest(None, "set", query, REQUEST_TIMEOUT))
        except jabber_error.StanzaError as e:
            raise RosterError(f"the server refused the roster change: {e.condition}"
                              + (f" ({e.text})" if e.text else "")) from None
        except defer.TimeoutError:
            raise RosterError(f"the server did not answer the roster change within "
                              f"{REQUEST_TIMEOUT:g} s") from None

    async def pending(self, profile: str) -> list[PendingRequest]:
        """The subscription requests waiting for an answer, oldest first."""
        return await self.storage.get_pending(profile)

    async def answer(self, client: Client, jid: str, accept: bool) -> None:
        """Accept (the contact sees the profile's presence from now on) or deny a
        subscription request.

        :raise NotFound: no request from ``jid`` waits
        """
        bare = contact_jid(jid)
        profile = client.profile.name
        if not any(r.jid == bare for r in await self.pending(profile)):
            raise NotFound(f"no subscription request from {bare} waits for an answer "
                           "(li roster pending lists them)")
        client.send(_presence(bare, "subscribed" if accept else "unsubscribed"))
        await self._serial(profile, lambda: self.storage.del_pending(profile, bare))


def _presence(to: str, type_: str) -> domish.Element:
    presence = domish.Element((None, "presence"))
    presence["to"] = to
    presence["type"] = type_
    return presence


def _status(presence: domish.Element) -> str | None:
    status = next((c for c in presence.elements() if c.name == "status"), None)
    text = str(status)[:MAX_STATUS] if status is not None else ""
    return text or None


def _read_items(name: str, query: domish.Element) -> list[RosterEntry]:
    """The items of a full roster, those the protocol allows, bounded."""
    items: dict[str, RosterEntry] = {}
    skipped = 0
    for item in query.elements(NS_ROSTER, "item"):
        entry = parse_item(item)
        if entry is None or is_removal(item) or (
                len(items) >= MAX_ITEMS and entry.jid not in items):
            skipped += 1
            continue
        items[entry.jid] = entry
    if skipped:
        log.warn("profile {profile}: {count} roster items left out (invalid JID, or "
                 "more than {max})", profile=name, count=skipped, max=MAX_ITEMS)
    return list(items.values())


def _describe(error: Exception) -> str:
    if isinstance(error, jabber_error.StanzaError):
        return f"error {error.condition}"
    if isinstance(error, defer.TimeoutError):
        return f"no answer within {REQUEST_TIMEOUT:g} s"
    return str(error) or type(error).__name__
