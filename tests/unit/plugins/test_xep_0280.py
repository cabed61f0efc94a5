"""Message carbons (XEP-0280) over a stub XML stream and a real storage: enabled when
the server offers them, the copies of the account's other devices stored with their
direction and once, forged and malformed carbons refused with a log line."""

import pytest
import pytest_twisted

from libervia.backend.plugins.messages import NS_SID
from libervia.backend.plugins.plugin_xep_0280 import NS_CARBONS, NS_FORWARD
from tests.unit.plugins.messages_env import ALICE, BOB, Backend, assert_logged
from tests.unit.plugins.presence_env import until


@pytest.fixture
def backend(storage):
    return Backend(storage, carbons=True)


def carbon(kind, inner, sender=ALICE):
    return (f"<message xmlns='jabber:client' from='{sender}' to='{ALICE}/res'>"
            f"<{kind} xmlns='{NS_CARBONS}'><forwarded xmlns='{NS_FORWARD}'>"
            f"{inner}</forwarded></{kind}></message>")


def inner(body, sender, to, extra=""):
    return (f"<message xmlns='jabber:client' type='chat' from='{sender}' to='{to}'>"
            f"<body>{body}</body>{extra}</message>")


@pytest_twisted.ensureDeferred
async def test_carbons_are_enabled_when_the_server_offers_them(storage):
    for offered, enabled, expected in ((True, True, True), (True, False, False),
                                       (False, True, False)):
        backend = Backend(storage, carbons=True)
        backend.client.start_stream()
        [request] = await until(backend.client.sent_requests)
        backend.client.answer(request, "<query xmlns='http://jabber.org/protocol/"
                                       "disco#info'/>")
        await backend.offer_carbons(offered, enabled)
        await until(lambda b=backend: b.client.sent_requests() == [])
        assert backend.carbons.enabled["alice"] is expected


@pytest_twisted.ensureDeferred
async def test_carbons_of_other_devices_are_stored_with_their_direction(backend):
    await backend.connect()
    sid = f"<stanza-id xmlns='{NS_SID}' by='{ALICE}' id='s1'/>"
    backend.client.receive(carbon("sent", inner("from my phone", f"{ALICE}/phone", BOB)))
    backend.client.receive(carbon("received", inner("to your phone", f"{BOB}/pc",
                                                    f"{ALICE}/phone", sid)))
    messages = await backend.stored(2)
    assert [(m["direction"], m["body"], m["from"], m["to"], m["with"]) for m in messages
            ] == [("out", "from my phone", f"{ALICE}/phone", BOB, BOB),
                  ("in", "to your phone", f"{BOB}/pc", f"{ALICE}/phone", BOB)]
    assert messages[1]["stanza_id"] == "s1"
    assert [s["via"] for s in backend.new()] == ["carbon", "carbon"]


@pytest_twisted.ensureDeferred
async def test_a_message_coming_live_and_as_a_carbon_is_stored_once(backend):
    await backend.connect()
    sid = f"<stanza-id xmlns='{NS_SID}' by='{ALICE}' id='s1'/>"
    backend.receive("both ways", stanza_id="s1")
    backend.client.receive(carbon("received", inner("both ways", f"{BOB}/phone",
                                                    f"{ALICE}/other", sid)))
    # the backend's own message, carbon-copied back by a server
    uid = (await backend.messages.send(backend.client, BOB, "mine")).uid
    [sent] = backend.sent_messages()
    origin = f"<origin-id xmlns='{NS_SID}' id='{sent['id']}'/>"
    backend.client.receive(carbon("sent", inner("mine", f"{ALICE}/res", BOB, origin)))
    backend.receive("last")
    messages = await backend.stored(3)
    assert [m["body"] for m in messages] == ["both ways", "mine", "last"]
    assert messages[1]["uid"] == uid


@pytest_twisted.ensureDeferred
async def test_forged_and_malformed_carbons_are_refused_with_a_log_line(backend,
                                                                       log_lines):
    await backend.connect()
    client = backend.client
    client.receive(carbon("sent", inner("forged", f"{ALICE}/phone", BOB),
                          sender="mallory@evil.example/x"))
    client.receive(carbon("received", inner("forged too", f"{BOB}/x", f"{ALICE}/x"),
                          sender=f"{ALICE}/phone"))
    client.receive(f"<message xmlns='jabber:client' from='{ALICE}'>"
                   f"<received xmlns='{NS_CARBONS}'/></message>")
    client.receive(carbon("sent", carbon("sent", inner("nested", f"{ALICE}/a", BOB))))
    client.receive(carbon("sent", inner("not mine", f"{BOB}/x", "carol@example.org")))
    client.receive(carbon("received", inner("not to me", f"{BOB}/x",
                                            "carol@example.org")))
    client.receive(carbon("sent", "<message xmlns='jabber:client' from='@bad' "
                                  "to='bob@example.org'><body>x</body></message>"))
    backend.receive("still here")
    [message] = await backend.stored(1)
    assert message["body"] == "still here"
    assert_logged(log_lines(), "forged carbon from mallory@evil.example/x refused",
                  f"forged carbon from {ALICE}/phone refused",
                  "carbon refused: no forwarded message",
                  "carbon refused: a carbon in a carbon",
                  "carbon refused: a sent carbon of a message not from the account",
                  "carbon refused: a received carbon of a message not to the account")
