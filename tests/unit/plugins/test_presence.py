"""Presence (RFC 6121) over a stub XML stream: what is sent, what is tracked, and what
hostile presences become."""

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.words.protocols.jabber.jid import JID

from libervia.backend.bridge.errors import InvalidParams
from libervia.backend.plugins.plugin_presence import (
    INITIAL_WAIT,
    MAX_RESOURCES,
    MAX_STATUS,
    PRESENCE_CHANGED_SIGNAL,
    TRIGGER_INITIAL,
    TRIGGER_PRESENCE_RECEIVED,
    TRIGGER_PRESENCE_SEND,
    InvalidPresence,
    Presence,
    PresenceState,
)
from tests.unit.plugins.presence_env import Host, StreamClient


@pytest.fixture
def host(storage):
    return Host(storage)


@pytest.fixture
def plugin(host):
    return Presence(host)


@pytest.fixture
def client(host, plugin):
    client = StreamClient()
    client.add(plugin.get_handler(client))
    host.clients.clients["alice"] = client
    return client


def xml(element) -> str:
    return element.toXml()


async def connected(client):
    """Start a stream and wait for the initial presence to go out (the own presence is
    read from the storage, in its threads, before)."""
    stub = client.start_stream()
    for __ in range(200):
        if stub.output:
            return stub
        await _tick()
    raise AssertionError("no initial presence was sent")


def _tick():
    return task.deferLater(reactor, 0.005, lambda: None)


@pytest_twisted.ensureDeferred
async def test_initial_presence_is_plain_available_for_a_new_profile(client):
    stub = await connected(client)
    assert [xml(e) for e in stub.output] == ["<presence/>"]


@pytest_twisted.ensureDeferred
async def test_the_presence_set_is_sent_stored_and_restored_at_the_next_connection(
        host, plugin, client, storage):
    await connected(client)
    state = await plugin.set_presence(client, "away", "lunch", 5)
    assert state == PresenceState("away", "lunch", 5)
    assert xml(client.output[-1]) == (
        "<presence><show>away</show><status>lunch</status><priority>5</priority>"
        "</presence>")
    # a new backend (plugin) on the same database starts with it
    host2 = Host(storage)
    plugin2 = Presence(host2)
    client2 = StreamClient()
    client2.add(plugin2.get_handler(client2))
    stub = await connected(client2)
    assert [xml(e) for e in stub.output] == [
        "<presence><show>away</show><status>lunch</status><priority>5</priority>"
        "</presence>"]


@pytest_twisted.ensureDeferred
async def test_the_presence_read_while_connecting_goes_as_soon_as_the_stream_is_up(
        plugin, client, storage):
    await storage.profiles.set_private_value("presence", "own", {"show": "dnd"},
                                             profile="alice")
    await plugin.profile_connecting(client)
    # nothing to wait for: sent while the stream manager tells the handlers
    stub = client.start_stream()
    assert [xml(e) for e in stub.output] == ["<presence><show>dnd</show></presence>"]


@pytest_twisted.ensureDeferred
async def test_the_initial_presence_waits_for_the_initial_trigger(host, client):
    gate = defer.Deferred()
    waited = []

    async def roster(client_):
        waited.append(client_)
        await gate
        return True

    host.trigger.add(TRIGGER_INITIAL, roster)
    stub = client.start_stream()
    for __ in range(20):
        await _tick()
    assert waited == [client] and stub.output == []
    gate.callback(None)
    await _tick()
    assert [xml(e) for e in stub.output] == ["<presence/>"]


@pytest_twisted.ensureDeferred
async def test_the_initial_presence_goes_anyway_when_the_trigger_never_answers(host, client):
    host.trigger.add(TRIGGER_INITIAL, lambda client_: defer.Deferred())
    stub = client.start_stream()
    for __ in range(20):
        await _tick()
    assert stub.output == []
    host.reactor.advance(INITIAL_WAIT)
    assert [xml(e) for e in stub.output] == ["<presence/>"]


@pytest_twisted.ensureDeferred
async def test_the_initial_presence_of_a_lost_stream_is_not_sent_on_the_next(host, client):
    gate = defer.Deferred()
    host.trigger.add(TRIGGER_INITIAL, lambda client_: gate)
    old = client.start_stream()
    client.lose_stream()
    gate.callback(True)
    await _tick()
    assert old.output == []


@pytest_twisted.ensureDeferred
async def test_every_available_presence_goes_through_the_send_trigger(host, plugin, client):
    seen = []

    def caps(client_, presence):
        presence.addElement(("http://jabber.org/protocol/caps", "c"))["ver"] = "v1"
        seen.append(presence.getAttribute("to"))
        return False  # not a veto: the presence goes out

    def after(client_, presence):
        seen.append("after")
        return True

    host.trigger.add(TRIGGER_PRESENCE_SEND, caps, priority=10)
    host.trigger.add(TRIGGER_PRESENCE_SEND, after)
    stub = await connected(client)
    await plugin.set_presence(client, "dnd")
    plugin.send_presence(client, to=JID("room@muc.example.org/me"))
    assert seen == [None, None, "room@muc.example.org/me"]
    assert all(e.c is not None and e.c["ver"] == "v1" for e in stub.output)
    assert stub.output[2]["to"] == "room@muc.example.org/me"
    # the unavailable presence is not one to announce capabilities in
    await plugin.profile_disconnecting(client)
    assert xml(stub.output[-1]) == "<presence type='unavailable'/>"
    assert len(seen) == 3


@pytest_twisted.ensureDeferred
async def test_a_failing_send_callback_does_not_keep_the_profile_unavailable(host, client):
    def broken(client_, presence):
        raise RuntimeError("plugin bug")

    host.trigger.add(TRIGGER_PRESENCE_SEND, broken)
    stub = await connected(client)
    assert [xml(e) for e in stub.output] == ["<presence/>"]


@pytest_twisted.ensureDeferred
async def test_a_presence_set_while_offline_is_stored_and_not_sent(plugin, client, host):
    await plugin.set_presence(client, "xa", None, -1)
    assert client.output == []
    stub = await connected(client)
    assert xml(stub.output[0]) == "<presence><show>xa</show><priority>-1</priority></presence>"


@pytest.mark.parametrize("show, status, priority, message", [
    ("busy", None, 0, "unknown show"),
    (None, "x" * (MAX_STATUS + 1), 0, "shorten"),
    (None, "a\x01b", 0, "XML forbids"),
    (None, "\ud800", 0, "XML forbids"),
    (None, None, 128, "priority"),
    (None, None, -129, "priority"),
    (None, None, True, "priority"),
    (None, 5, 0, "text"),
])
@pytest_twisted.ensureDeferred
async def test_invalid_presences_are_refused_before_anything_is_stored_or_sent(
        plugin, client, show, status, priority, message):
    await connected(client)
    with pytest.raises(InvalidPresence, match=message):
        await plugin.set_presence(client, show, status, priority)
    assert len(client.output) == 1
    assert await plugin.get_own(client) == PresenceState()


@pytest_twisted.ensureDeferred
async def test_bridge_methods_set_and_get(host, plugin, client):
    await connected(client)
    assert await host.call("presence_set", profile="alice", show="chat",
                           status="hi", priority=3) == {
        "show": "chat", "status": "hi", "priority": 3}
    with pytest.raises(InvalidParams):
        await host.call("presence_set", profile="alice", show="busy")
    with pytest.raises(InvalidPresence):
        await host.call("presence_get", profile="alice", jid="a@b@c")
    client.receive("<presence from='bob@example.org/phone'><show>away</show>"
                   "<priority>1</priority></presence>")
    answer = await host.call("presence_get", profile="alice")
    assert answer == {
        "own": {"show": "chat", "status": "hi", "priority": 3},
        "contacts": [{"jid": "bob@example.org", "available": True, "best": "phone",
                      "resources": [{"resource": "phone", "show": "away",
                                     "status": None, "priority": 1}]}]}
    answer = await host.call("presence_get", profile="alice", jid="carol@example.org")
    assert answer["contacts"] == [{"jid": "carol@example.org", "available": False,
                                   "best": None, "resources": []}]


@pytest_twisted.ensureDeferred
async def test_contacts_presences_are_tracked_per_resource_with_the_winner(
        host, plugin, client):
    await connected(client)
    client.receive("<presence from='bob@example.org/pc'><priority>5</priority>"
                   "<status>at work</status></presence>")
    client.receive("<presence from='bob@example.org/phone'><show>chat</show>"
                   "<priority>5</priority></presence>")
    client.receive("<presence from='bob@example.org/tablet'><priority>1</priority>"
                   "</presence>")
    [bob] = plugin.get_presences(client)
    # equal priorities: the most available show wins
    assert bob["best"] == "phone"
    assert [r["resource"] for r in bob["resources"]] == ["pc", "phone", "tablet"]
    client.receive("<presence from='bob@example.org/phone' type='unavailable'/>")
    [bob] = plugin.get_presences(client)
    assert bob["best"] == "pc"
    [pc] = plugin.get_presences(client, JID("bob@example.org/pc"))[0][
        "resources"]
    assert pc == {"resource": "pc", "show": None, "status": "at work", "priority": 5}
    signals = host.signals(PRESENCE_CHANGED_SIGNAL)
    assert [(s["jid"], s["available"]) for s in signals] == [
        ("bob@example.org/pc", True), ("bob@example.org/phone", True),
        ("bob@example.org/tablet", True), ("bob@example.org/phone", False)]
    assert plugin.available(client, ["bob@example.org", "carol@example.org"]) == {
        "bob@example.org": {"resource": "pc", "show": None, "status": "at work",
                            "priority": 5}}
    # the stream is gone: what it said is stale
    client.lose_stream()
    assert plugin.get_presences(client) == []


@pytest_twisted.ensureDeferred
async def test_the_latest_presence_wins_between_equals(host, plugin, client):
    await connected(client)
    client.receive("<presence from='bob@example.org/a'/>")
    host.reactor.advance(1)
    client.receive("<presence from='bob@example.org/b'/>")
    assert plugin.get_presences(client)[0]["best"] == "b"


HOSTILE = [
    "<presence/>",  # no sender
    "<presence from=''/>",
    "<presence from='a@b@c/x'/>",
    "<presence from='@example.org'/>",
    "<presence from='bob@example..org/x'/>",  # Twisted's stringprep raised IndexError
    "<presence from='bob@example.org/'/>",
    "<presence from='bob@example.org/r' type='bogus'/>",
    "<presence from='bob@example.org/r' type='subscribe'/>",
    "<presence from='bob@example.org/r' type='probe'/>",
    "<presence from='nobody@example.org/r' type='unavailable'/>",  # never seen
    "<presence from='nobody@example.org/r' type='error'><error type='cancel'/></presence>",
]


@pytest.mark.parametrize("stanza", HOSTILE)
@pytest_twisted.ensureDeferred
async def test_presences_that_say_nothing_trackable_are_ignored(host, plugin, client,
                                                                stanza):
    await connected(client)
    client.receive(stanza)
    assert plugin.get_presences(client) == []
    assert host.signals(PRESENCE_CHANGED_SIGNAL) == []


@pytest_twisted.ensureDeferred
async def test_what_a_presence_says_is_bounded(plugin, client):
    await connected(client)
    client.receive("<presence from='bob@example.org/r'><show>sleeping</show>"
                   "<priority>1000</priority><status>" + "x" * 100_000 + "</status>"
                   "</presence>")
    client.receive("<presence from='carol@example.org/r'><priority>high</priority>"
                   "<status xml:lang='fr'>absente</status><status>away</status></presence>")
    bob, carol = plugin.get_presences(client)
    assert bob["resources"][0]["show"] is None and bob["resources"][0]["priority"] == 0
    assert len(bob["resources"][0]["status"]) == MAX_STATUS
    assert carol["resources"][0]["status"] == "away"
    assert carol["resources"][0]["priority"] == 0


@pytest_twisted.ensureDeferred
async def test_resources_of_one_entity_are_bounded(plugin, client):
    await connected(client)
    for n in range(MAX_RESOURCES + 10):
        client.receive(f"<presence from='bob@example.org/r{n}'/>")
    [bob] = plugin.get_presences(client)
    assert len(bob["resources"]) == MAX_RESOURCES
    # a known resource still updates
    client.receive("<presence from='bob@example.org/r0'><show>dnd</show></presence>")
    [bob] = plugin.get_presences(client)
    assert bob["resources"][0] == {"resource": "r0", "show": "dnd", "status": None,
                                   "priority": 0}


@pytest_twisted.ensureDeferred
async def test_a_plugin_can_claim_a_received_presence(host, plugin, client):
    await connected(client)
    host.trigger.add(TRIGGER_PRESENCE_RECEIVED, lambda client_, presence: not presence[
        "from"].startswith("room@"))
    client.receive("<presence from='room@muc.example.org/nick'/>")
    client.receive("<presence from='bob@example.org/r'/>")
    assert [e["jid"] for e in plugin.get_presences(client)] == ["bob@example.org"]


@pytest_twisted.ensureDeferred
async def test_unavailable_is_sent_before_a_disconnection_only_if_announced(plugin, client):
    await plugin.profile_disconnecting(client)  # no stream
    stub = await connected(client)
    await plugin.profile_disconnecting(client)
    assert [xml(e) for e in stub.output] == ["<presence/>", "<presence type='unavailable'/>"]
    # said once
    await plugin.profile_disconnecting(client)
    assert len(stub.output) == 2


def test_stored_presences_that_are_unreadable_give_the_default():
    assert PresenceState.from_stored(None) == PresenceState()
    assert PresenceState.from_stored({"show": "nope", "priority": 1}) == PresenceState()
    assert PresenceState.from_stored({"show": "away", "priority": 2}) == PresenceState(
        "away", None, 2)
