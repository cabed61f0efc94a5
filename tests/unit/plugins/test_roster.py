"""Roster (RFC 6121) with versioning (XEP-0237) and subscriptions, over a stub XML
stream and a real storage: what is asked, what is stored, what survives a restart,
and what hostile stanzas become."""

import pytest
import pytest_twisted
from twisted.internet import defer

from libervia.backend.core.exceptions import NotFound
from libervia.backend.plugins.plugin_presence import MAX_STATUS, Presence
from libervia.backend.plugins.roster import (
    NS_ROSTER,
    NS_ROSTER_VER,
    ROSTER_CHANGED_SIGNAL,
    SUBSCRIPTION_REQUEST_SIGNAL,
    InvalidRoster,
    RosterError,
    RosterPlugin,
)
from libervia.backend.plugins.roster import operations as roster_operations
from tests.unit.plugins.presence_env import Host, StreamClient, until

VERSIONED = {(NS_ROSTER_VER, "ver"): object()}


class Backend:
    """A backend (host, presence and roster plugins) and alice's client: made again on
    the same storage, it is a restart."""

    def __init__(self, storage, features=VERSIONED):
        self.host = Host(storage)
        self.presence = self.host.plugins["PRESENCE"] = Presence(self.host)
        self.roster = self.host.plugins["ROSTER"] = RosterPlugin(self.host)
        self.client = StreamClient()
        self.client.features = dict(features)
        for plugin in (self.presence, self.roster):
            self.client.add(plugin.get_handler(self.client))
        self.host.clients.clients["alice"] = self.client

    def connect(self):
        return self.client.start_stream()

    async def roster_request(self):
        """The roster get the client sent once the stream was up."""
        request = await until(lambda: next(iter(self.client.sent_requests()), None))
        assert request["type"] == "get" and request.query.uri == NS_ROSTER
        return request

    def presences(self):
        return [e for e in self.client.output if e.name == "presence"]

    def signals(self, name):
        return self.host.signals(name)


ROSTER_V1 = (f"<query xmlns='{NS_ROSTER}' ver='v1'>"
             "<item jid='bob@example.org' name='Bob' subscription='both'>"
             "<group>Friends</group><group>Work</group></item>"
             "<item jid='carol@example.org' subscription='none' ask='subscribe'/>"
             "</query>")


def push(content, sender=None, ver="v2", stanza_id="push1"):
    sender_attr = f" from='{sender}'" if sender else ""
    return (f"<iq xmlns='jabber:client' type='set' id='{stanza_id}'{sender_attr}>"
            f"<query xmlns='{NS_ROSTER}' ver='{ver}'>{content}</query></iq>")


def answers_to(client, stanza_id):
    return [e for e in client.output if e.name == "iq" and e.getAttribute("id") == stanza_id]


async def connected(backend, roster=ROSTER_V1):
    backend.connect()
    backend.client.answer(await backend.roster_request(), roster)
    await until(backend.presences)


@pytest.fixture
def backend(storage):
    return Backend(storage)


@pytest_twisted.ensureDeferred
async def test_the_roster_is_fetched_stored_then_the_initial_presence_goes(backend):
    backend.connect()
    request = await backend.roster_request()
    # first connection to a versioning server: ask for a first version
    assert request.query.getAttribute("ver") == ""
    assert backend.presences() == []
    backend.client.answer(request, ROSTER_V1)
    await until(backend.presences)
    roster = await backend.roster.get_roster("alice")
    assert roster == [
        {"jid": "bob@example.org", "name": "Bob", "subscription": "both", "ask": False,
         "groups": ["Friends", "Work"], "presence": None},
        {"jid": "carol@example.org", "name": None, "subscription": "none", "ask": True,
         "groups": [], "presence": None}]
    stored = await backend.host.storage.roster.get_roster("alice")
    assert stored.version == "v1"
    assert [s["jid"] for s in backend.signals(ROSTER_CHANGED_SIGNAL)] == [
        "bob@example.org", "carol@example.org"]


@pytest_twisted.ensureDeferred
async def test_an_unchanged_roster_is_not_downloaded_again_after_a_restart(storage):
    first = Backend(storage)
    await connected(first)
    # the backend restarts: the stored version is given, the server says "unchanged"
    second = Backend(storage)
    second.connect()
    request = await second.roster_request()
    assert request.query.getAttribute("ver") == "v1"
    second.client.answer(request)  # an empty result: nothing was sent again
    await until(second.presences)
    assert [c["jid"] for c in await second.roster.get_roster("alice")] == [
        "bob@example.org", "carol@example.org"]
    assert second.signals(ROSTER_CHANGED_SIGNAL) == []
    assert second.roster.last_fetch == {"alice": "unchanged"}
    # the changes since come as pushes, which move the version on
    second.client.receive(push("<item jid='dave@example.org' subscription='to'/>"))
    await until(lambda: second.signals(ROSTER_CHANGED_SIGNAL))
    assert answers_to(second.client, "push1")[0]["type"] == "result"
    stored = await storage.roster.get_roster("alice")
    assert stored.version == "v2"
    assert [e.jid for e in stored.items] == ["bob@example.org", "carol@example.org",
                                             "dave@example.org"]


@pytest_twisted.ensureDeferred
async def test_without_versioning_the_full_roster_replaces_the_stored_one(storage):
    first = Backend(storage, features={})
    first.connect()
    request = await first.roster_request()
    assert request.query.getAttribute("ver") is None
    first.client.answer(request, ROSTER_V1)
    await until(first.presences)
    assert (await storage.roster.get_roster("alice")).version is None
    second = Backend(storage, features={})
    second.connect()
    second.client.answer(await second.roster_request(),
                         f"<query xmlns='{NS_ROSTER}'><item jid='bob@example.org' "
                         "subscription='from'/></query>")
    await until(second.presences)
    assert [(c["jid"], c["subscription"], c["name"])
            for c in await second.roster.get_roster("alice")] == [
        ("bob@example.org", "from", None)]
    # only what changed is signalled
    assert [(s["jid"], s["item"] and s["item"]["subscription"])
            for s in second.signals(ROSTER_CHANGED_SIGNAL)] == [
        ("bob@example.org", "from"), ("carol@example.org", None)]


@pytest_twisted.ensureDeferred
async def test_a_failed_fetch_keeps_the_stored_roster_and_sends_the_presence(storage):
    first = Backend(storage)
    await connected(first)
    second = Backend(storage)
    second.connect()
    second.client.answer(await second.roster_request(),
                         "<error type='wait'><resource-constraint "
                         "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
                         type_="error")
    await until(second.presences)
    assert len(await second.roster.get_roster("alice")) == 2
    assert second.roster.last_fetch == {"alice": "failed"}


@pytest.mark.parametrize("sender", [None, "alice@example.org", "ALICE@example.org"])
@pytest_twisted.ensureDeferred
async def test_pushes_from_the_account_are_applied(backend, sender):
    await connected(backend)
    backend.client.receive(push("<item jid='bob@example.org' subscription='remove'/>",
                                sender=sender))
    await until(lambda: len(backend.signals(ROSTER_CHANGED_SIGNAL)) == 3)
    assert backend.signals(ROSTER_CHANGED_SIGNAL)[-1] == {
        "profile": "alice", "jid": "bob@example.org", "item": None}
    assert [c["jid"] for c in await backend.roster.get_roster("alice")] == [
        "carol@example.org"]
    assert answers_to(backend.client, "push1")[0]["type"] == "result"


@pytest.mark.parametrize("stanza, condition", [
    (push("<item jid='mallory@evil.example' subscription='both'/>",
          sender="mallory@evil.example"), "service-unavailable"),
    (push("<item jid='mallory@evil.example' subscription='both'/>",
          sender="alice@example.org/other"), "service-unavailable"),
    (push("<item jid='mallory@evil.example' subscription='both'/>",
          sender="example.org"), "service-unavailable"),
    (push("<item jid='mallory@evil.example' subscription='both'/>", sender="a@b@c"),
     "service-unavailable"),
    (push(""), "bad-request"),
    (push("<item jid='a@example.org'/><item jid='b@example.org'/>"), "bad-request"),
    (push("<item jid='a@b@c'/>"), "bad-request"),
    (push("<item jid='bob@example.org/phone'/>"), "bad-request"),
    (push("<item/>"), "bad-request"),
])
@pytest_twisted.ensureDeferred
async def test_pushes_from_strangers_or_malformed_are_refused_and_change_nothing(
        backend, stanza, condition):
    await connected(backend)
    before = await backend.roster.get_roster("alice")
    backend.client.receive(stanza)
    [answer] = answers_to(backend.client, "push1")
    assert answer["type"] == "error"
    assert answer.error.firstChildElement().name == condition
    assert await backend.roster.get_roster("alice") == before
    assert (await backend.host.storage.roster.get_roster("alice")).version == "v1"


@pytest_twisted.ensureDeferred
async def test_what_a_roster_item_says_is_bounded(backend):
    groups = "".join(f"<group>g{n}</group>" for n in range(100))
    await connected(backend, f"<query xmlns='{NS_ROSTER}' ver='v1'>"
                    f"<item jid='bob@example.org' name='{'n' * 5000}' subscription='odd' "
                    f"ask='maybe'>{groups}<group>g1</group><group></group></item>"
                    "<item jid='@example.org'/><item jid='x@example.org/res'/>"
                    "</query>")
    [bob] = await backend.roster.get_roster("alice")
    assert len(bob["name"]) == 1023
    assert (bob["subscription"], bob["ask"]) == ("none", False)
    assert bob["groups"] == [f"g{n}" for n in range(64)]


@pytest_twisted.ensureDeferred
async def test_subscription_requests_are_kept_until_answered_across_restarts(storage):
    first = Backend(storage)
    await connected(first)
    first.client.receive("<presence from='dave@example.org/pc' type='subscribe'>"
                         f"<status>{'hi' * MAX_STATUS}</status></presence>")
    signal = await until(lambda: first.signals(SUBSCRIPTION_REQUEST_SIGNAL))
    assert signal[0]["jid"] == "dave@example.org"
    assert len(signal[0]["status"]) == MAX_STATUS
    first.client.receive("<presence from='erin@example.org' type='subscribe'/>")
    await until(lambda: len(first.signals(SUBSCRIPTION_REQUEST_SIGNAL)) == 2)
    # restart: the requests are still there, and are answered
    second = Backend(storage)
    await connected(second)
    pending = await second.roster.pending("alice")
    assert [r.jid for r in pending] == ["dave@example.org", "erin@example.org"]
    assert await second.host.call("subscription_answer", profile="alice",
                                  jid="dave@example.org", accept=True) is None
    await second.host.call("subscription_answer", profile="alice",
                           jid="erin@example.org", accept=False)
    sent = [(p["to"], p["type"]) for p in second.presences() if p.getAttribute("type")]
    assert sent == [("dave@example.org", "subscribed"),
                    ("erin@example.org", "unsubscribed")]
    assert await second.host.call("subscription_pending", profile="alice") == []
    with pytest.raises(NotFound, match="no subscription request"):
        await second.roster.answer(second.client, "dave@example.org", True)


@pytest_twisted.ensureDeferred
async def test_a_withdrawn_request_is_forgotten_and_answers_are_only_logged(backend):
    await connected(backend)
    backend.client.receive("<presence from='dave@example.org' type='subscribe'/>")
    await until(lambda: backend.signals(SUBSCRIPTION_REQUEST_SIGNAL))
    backend.client.receive("<presence from='dave@example.org/pc' type='unsubscribe'/>")
    backend.client.receive("<presence from='bob@example.org' type='subscribed'/>")
    # the storage calls of one profile run in order: this one comes after the removal
    assert await backend.roster._serial("alice", lambda: backend.roster.pending(
        "alice")) == []
    # an answer to the profile's request is no presence of the contact
    assert backend.presence.get_presences(backend.client) == []


@pytest.mark.parametrize("stanza", [
    "<presence type='subscribe'/>",
    "<presence from='' type='subscribe'/>",
    "<presence from='a@b@c' type='subscribe'/>",
    "<presence from='@example.org' type='subscribe'/>",
    "<presence from='bob@example..org' type='subscribe'/>",
])
@pytest_twisted.ensureDeferred
async def test_subscription_requests_without_a_valid_sender_are_ignored(backend, stanza):
    await connected(backend)
    backend.client.receive(stanza)
    backend.client.receive("<presence from='dave@example.org' type='subscribe'/>")
    await until(lambda: backend.signals(SUBSCRIPTION_REQUEST_SIGNAL))
    assert [r.jid for r in await backend.roster.pending("alice")] == ["dave@example.org"]


@pytest_twisted.ensureDeferred
async def test_subscription_requests_are_bounded(backend, monkeypatch):
    monkeypatch.setattr(roster_operations, "MAX_PENDING", 2)
    await connected(backend)
    for name in ("a", "b", "c", "a"):
        backend.client.receive(f"<presence from='{name}@example.org' type='subscribe'/>")
    await until(lambda: len(backend.signals(SUBSCRIPTION_REQUEST_SIGNAL)) == 3)
    # the third contact is dropped; a contact asking again is not a new request (its
    # request is the latest one now)
    assert [r.jid for r in await backend.roster.pending("alice")] == [
        "b@example.org", "a@example.org"]


@pytest_twisted.ensureDeferred
async def test_adding_a_contact_sets_the_item_then_asks_for_a_subscription(backend):
    await connected(backend)
    call = defer.ensureDeferred(backend.host.call(
        "roster_add", profile="alice", jid="dave@example.org", name="Dave",
        groups=["Work", "Work", "Chess"]))
    request = await until(lambda: next(iter(backend.client.sent_requests()), None))
    assert request["type"] == "set"
    item = request.query.item
    assert (item["jid"], item["name"]) == ("dave@example.org", "Dave")
    assert [str(g) for g in item.elements(NS_ROSTER, "group")] == ["Work", "Chess"]
    assert not backend.presences()[1:]
    backend.client.answer(request)
    entry = await call
    assert entry == {"jid": "dave@example.org", "name": "Dave", "subscription": "none",
                     "ask": False, "groups": ["Work", "Chess"]}
    subscribe = backend.presences()[-1]
    assert (subscribe["to"], subscribe["type"]) == ("dave@example.org", "subscribe")
    assert "dave@example.org" in [c["jid"] for c in await backend.roster.get_roster("alice")]


async def update(backend, **params):
    """roster_update of bob: the roster set it sent, and what the call gave."""
    call = defer.ensureDeferred(backend.host.call(
        "roster_update", profile="alice", jid="bob@example.org", **params))
    request = await until(lambda: next(iter(backend.client.sent_requests()), None))
    backend.client.output.clear()
    backend.client.answer(request)
    return request.query.item, await call


@pytest_twisted.ensureDeferred
async def test_updating_a_contact_changes_what_is_given_and_keeps_the_rest(backend):
    await connected(backend)
    item, entry = await update(backend, groups=["Chess"])
    assert (item["jid"], item["name"]) == ("bob@example.org", "Bob")
    assert [str(g) for g in item.elements(NS_ROSTER, "group")] == ["Chess"]
    assert entry == {"jid": "bob@example.org", "name": "Bob", "subscription": "both",
                     "ask": False, "groups": ["Chess"]}
    item, entry = await update(backend, name="Robert")
    assert [str(g) for g in item.elements(NS_ROSTER, "group")] == ["Chess"]
    assert (entry["name"], entry["groups"]) == ("Robert", ["Chess"])
    # "" and [] remove the name and the groups
    item, entry = await update(backend, name="", groups=[])
    assert not item.hasAttribute("name") and not list(item.elements())
    assert (entry["name"], entry["groups"]) == (None, [])
    stored = await backend.roster.get_entry("alice", "bob@example.org")
    assert (stored.name, stored.groups, stored.subscription) == (None, (), "both")
    # no subscription is asked: only roster sets went out
    assert not backend.presences()


@pytest_twisted.ensureDeferred
async def test_removing_a_contact_asks_the_server_to_remove_it(backend):
    await connected(backend)
    call = defer.ensureDeferred(backend.host.call("roster_remove", profile="alice",
                                                  jid="carol@example.org"))
    request = await until(lambda: next(iter(backend.client.sent_requests()), None))
    assert (request.query.item["jid"], request.query.item["subscription"]) == (
        "carol@example.org", "remove")
    backend.client.answer(request)
    await call
    assert [c["jid"] for c in await backend.roster.get_roster("alice")] == [
        "bob@example.org"]


@pytest_twisted.ensureDeferred
async def test_the_roster_shows_each_contacts_winning_presence(backend):
    await connected(backend)
    backend.client.receive("<presence from='bob@example.org/pc'><show>away</show>"
                           "</presence>")
    bob, carol = await backend.host.call("roster_get", profile="alice")
    assert bob["presence"] == {"resource": "pc", "show": "away", "status": None,
                               "priority": 0}
    assert carol["presence"] is None


@pytest.mark.parametrize("method, params, error", [
    ("roster_add", {"jid": "a@b@c"}, InvalidRoster),
    ("roster_add", {"jid": "dave@example.org/pc"}, InvalidRoster),
    ("roster_add", {"jid": "dave@example.org", "name": "a\x00"}, InvalidRoster),
    ("roster_add", {"jid": "dave@example.org", "groups": ["x" * 2000]}, InvalidRoster),
    ("roster_add", {"jid": "dave@example.org", "groups": ["g"] * 65}, InvalidRoster),
    ("roster_update", {"jid": "nobody@example.org"}, NotFound),
    ("roster_update", {"jid": "bob@example.org", "name": "a\x00"}, InvalidRoster),
    ("roster_update", {"jid": "bob@example.org", "groups": ["g"] * 65}, InvalidRoster),
    ("roster_update", {"jid": "bob@example.org/pc"}, InvalidRoster),
    ("roster_remove", {"jid": "nobody@example.org"}, NotFound),
    ("subscription_answer", {"jid": "nobody@example.org", "accept": True}, NotFound),
    ("roster_get", {"profile": "nobody"}, NotFound),
    ("roster_add", {"profile": "bob", "jid": "dave@example.org"}, NotFound),
])
@pytest_twisted.ensureDeferred
async def test_invalid_calls_give_typed_errors_and_send_nothing(backend, method, params,
                                                                error):
    await connected(backend)
    sent = len(backend.client.output)
    with pytest.raises(error):
        await backend.host.call(method, **{"profile": "alice", **params})
    assert len(backend.client.output) == sent


@pytest_twisted.ensureDeferred
async def test_a_roster_change_the_server_refuses_is_a_roster_error(backend):
    await connected(backend)
    call = defer.ensureDeferred(backend.roster.add(backend.client, "dave@example.org"))
    request = await until(lambda: next(iter(backend.client.sent_requests()), None))
    backend.client.answer(request, "<error type='modify'><not-acceptable "
                          "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
                          type_="error")
    with pytest.raises(RosterError, match="not-acceptable"):
        await call
    # nothing stored, no subscription asked
    assert "dave@example.org" not in [c["jid"] for c in
                                      await backend.roster.get_roster("alice")]
    assert all(p.getAttribute("type") != "subscribe" for p in backend.presences())


@pytest_twisted.ensureDeferred
async def test_the_stored_roster_is_read_while_offline(storage):
    first = Backend(storage)
    await connected(first)
    second = Backend(storage)
    assert [c["jid"] for c in await second.host.call("roster_get", profile="alice")] == [
        "bob@example.org", "carol@example.org"]
