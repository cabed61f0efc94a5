"""Messages (RFC 6121) and their history, over a stub XML stream and a real storage:
live messages, one's own, duplicates, stanza-ids trusted or not, trigger points, and
what hostile stanzas and bad parameters become."""

import pytest
import pytest_twisted

from libervia.backend.bridge.errors import InvalidParams
from libervia.backend.core.exceptions import NotFound
from libervia.backend.plugins.messages import (
    NS_SID,
    TRIGGER_RECEIVED,
    TRIGGER_SEND,
    TRIGGER_STORED,
    InvalidMessage,
    MessageCancelled,
)
from libervia.backend.plugins.plugin_xep_0030 import NS_DISCO_INFO
from tests.unit.plugins.messages_env import ALICE, BOB, NOW, Backend, assert_logged
from tests.unit.plugins.presence_env import until


@pytest.fixture
def backend(storage):
    return Backend(storage)


@pytest_twisted.ensureDeferred
async def test_a_live_message_is_stored_once_with_its_ids_and_signalled(backend):
    await backend.connect()
    backend.receive("hi ☕", stanza_id="s1", origin_id="o1")
    [message] = await backend.stored(1)
    assert (message["from"], message["to"], message["with"]) == (
        f"{BOB}/phone", f"{ALICE}/res", BOB)
    assert (message["direction"], message["type"], message["body"]) == ("in", "chat",
                                                                          "hi ☕")
    assert (message["stanza_id"], message["origin_id"], message["id"]) == ("s1", "o1",
                                                                            "m1")
    [signal] = backend.new()
    assert (signal["profile"], signal["via"], signal["message"]) == ("alice", "live",
                                                                     message)
    assert await backend.host.call("message_get", profile="alice",
                                   uid=message["uid"]) == message


@pytest_twisted.ensureDeferred
async def test_a_message_coming_again_with_its_stanza_id_is_stored_once(backend):
    await backend.connect()
    for __ in range(3):
        backend.receive("once", stanza_id="s1")
    backend.receive("after")
    messages = await backend.stored(2)
    assert [m["body"] for m in messages] == ["once", "after"]
    assert len(backend.new()) == 2


@pytest_twisted.ensureDeferred
async def test_messages_wait_for_the_answer_about_stanza_ids(backend):
    backend.client.start_stream()
    [request] = await until(backend.client.sent_requests)
    # a message arriving before the server said it gives stanza-ids
    backend.receive("early", stanza_id="s1")
    assert backend.new() == []
    backend.client.answer(request, f"<query xmlns='{NS_DISCO_INFO}'>"
                                   f"<feature var='{NS_SID}'/></query>")
    [message] = await backend.stored(1)
    assert message["stanza_id"] == "s1"


@pytest_twisted.ensureDeferred
async def test_stanza_ids_are_trusted_only_from_a_server_giving_them(backend, log_lines):
    await backend.connect(stanza_ids=False)
    # the server gives none: a stranger wrote this one, to shadow a later message
    backend.receive("forged", stanza_id="s1")
    backend.receive("real", stanza_id="s1")
    messages = await backend.stored(2)
    assert [(m["body"], m["stanza_id"]) for m in messages] == [("forged", None),
                                                                ("real", None)]
    assert any("stanza-id of the account in a message from bob@example.org/phone "
               "ignored" in line for line in log_lines())


@pytest_twisted.ensureDeferred
async def test_stanza_ids_of_others_or_doubled_are_not_trusted(backend, log_lines):
    await backend.connect()
    backend.receive("by bob", stanza_id="s1", by=BOB)
    two = (f"<stanza-id xmlns='{NS_SID}' by='{ALICE}' id='x1'/>"
           f"<stanza-id xmlns='{NS_SID}' by='{ALICE}' id='x2'/>")
    backend.receive("two", extra=two)
    messages = await backend.stored(2)
    assert [m["stanza_id"] for m in messages] == [None, None]
    assert any("2 stanza-ids of the account" in line for line in log_lines())


@pytest_twisted.ensureDeferred
async def test_a_message_sent_carries_an_origin_id_and_is_stored(backend):
    await backend.connect()
    uid = await backend.host.call("message_send", profile="alice", to=BOB,
                                  body={"": "hello", "fr": "bonjour"},
                                  subject="greetings", thread="t1",
                                  extra={"client": "li"})
    [sent] = backend.sent_messages()
    origin = next(sent.elements(NS_SID, "origin-id"))
    assert (sent["to"], sent["type"], origin["id"]) == (BOB, "chat", sent["id"])
    bodies = {c.getAttribute(("http://www.w3.org/XML/1998/namespace", "lang"), ""):
              str(c) for c in sent.elements("jabber:client", "body")}
    assert bodies == {"": "hello", "fr": "bonjour"}
    assert str(next(sent.elements("jabber:client", "thread"))) == "t1"
    message = await backend.host.call("message_get", profile="alice", uid=uid)
    assert (message["direction"], message["from"], message["with"]) == (
        "out", f"{ALICE}/res", BOB)
    assert (message["origin_id"], message["subject"], message["extra"]) == (
        sent["id"], "greetings", {"client": "li"})
    assert backend.new()[0]["via"] == "sent"


@pytest_twisted.ensureDeferred
async def test_an_own_message_seen_again_is_stored_once_and_gets_its_stanza_id(backend):
    await backend.connect()
    uid = await backend.host.call("message_send", profile="alice", to=BOB, body="mine")
    [sent] = backend.sent_messages()
    # the same message, as the account's server reflects it (a carbon or the archive
    # will): from the account, with the server's stanza-id
    backend.receive("mine", sender=f"{ALICE}/res", stanza_id="s9",
                    origin_id=sent["id"])
    backend.receive("next")
    messages = await backend.stored(2)
    assert [(m["uid"], m["body"]) for m in messages] == [(uid, "mine"),
                                                         (messages[1]["uid"], "next")]
    assert (await backend.host.call("message_get", profile="alice", uid=uid)
            )["stanza_id"] == "s9"


@pytest_twisted.ensureDeferred
async def test_bodies_and_subjects_are_kept_by_language(backend):
    await backend.connect()
    backend.client.receive(
        f"<message xmlns='jabber:client' from='{BOB}/p' type='normal' xml:lang='fr'>"
        "<subject>sujet</subject><body>bonjour</body>"
        "<body xml:lang='en'>hello</body><thread parent='t0'>t1</thread></message>")
    [message] = await backend.stored(1)
    assert (message["bodies"], message["subjects"]) == (
        {"fr": "bonjour", "en": "hello"}, {"fr": "sujet"})
    assert (message["type"], message["thread"], message["thread_parent"]) == (
        "normal", "t1", "t0")


@pytest_twisted.ensureDeferred
async def test_an_offline_message_keeps_its_original_time(backend):
    await backend.connect()
    delay = "<delay xmlns='urn:xmpp:delay' from='example.org' stamp='2026-01-02T03:04:05Z'/>"
    backend.receive("while you were away", extra=delay)
    future = "<delay xmlns='urn:xmpp:delay' stamp='2999-01-01T00:00:00Z'/>"
    backend.receive("from the future", extra=future)
    messages = await backend.stored(2)
    assert messages[0]["timestamp"] == "2026-01-02T03:04:05+00:00"
    assert messages[0]["extra"] == {"delayed": True}
    # a time in the future is not believed: the message is as late as its receipt
    assert messages[1]["timestamp"] == messages[1]["received"] == NOW.isoformat()


@pytest_twisted.ensureDeferred
async def test_triggers_change_cancel_and_claim_messages(backend):
    await backend.connect()
    seen = []

    def encrypt(client, event):
        body = next(event.element.elements("jabber:client", "body"))
        body.children = ["(encrypted)"]
        return True

    def stored(client, message):
        seen.append(message.body)
        return True

    backend.host.trigger.add(TRIGGER_SEND, encrypt)
    backend.host.trigger.add(TRIGGER_STORED, stored)
    uid = await backend.messages.send(backend.client, BOB, "secret")
    [sent] = backend.sent_messages()
    assert str(next(sent.elements("jabber:client", "body"))) == "(encrypted)"
    # what is stored is what the user wrote
    assert (await backend.messages.get("alice", uid.uid)).body == "secret"
    assert seen == ["secret"]

    def cancel(client, event):
        event.reason = "no key for bob"
        return False

    backend.host.trigger.add(TRIGGER_SEND, cancel, priority=10)
    with pytest.raises(MessageCancelled, match="no key for bob"):
        await backend.messages.send(backend.client, BOB, "other secret")
    assert len(backend.sent_messages()) == 1

    def claim(client, event):
        return event.read.bodies.get("") != "claimed"

    backend.host.trigger.add(TRIGGER_RECEIVED, claim)
    backend.receive("claimed")
    backend.receive("kept")
    messages = await backend.stored(2)
    assert [m["body"] for m in messages] == ["secret", "kept"]


@pytest_twisted.ensureDeferred
async def test_hostile_messages_are_logged_and_the_profile_goes_on(storage, log_lines):
    backend = Backend(storage, {"plugin MESSAGES": {"max_body": 10}})
    await backend.connect()
    client = backend.client
    for stanza in (
            "<message xmlns='jabber:client' from='@bad' type='chat'><body>x</body></message>",
            "<message xmlns='jabber:client' from='bob@example.org/' type='chat'>"
            "<body>x</body></message>",
            f"<message xmlns='jabber:client' from='{BOB}' to='a@b/' ><body>x</body>"
            "</message>",
            f"<message xmlns='jabber:client' from='{BOB}' type='error'><body>x</body>"
            "</message>",
            f"<message xmlns='jabber:client' from='{BOB}' type='groupchat'><body>x</body>"
            "</message>",
            f"<message xmlns='jabber:client' from='{BOB}' type='chat'><active "
            "xmlns='http://jabber.org/protocol/chatstates'/></message>",
    ):
        client.receive(stanza)
    # too long: cut, and flagged; an id too long is dropped, not cut
    backend.receive("x" * 50, origin_id="o" * 300,
                    extra="<delay xmlns='urn:xmpp:delay' stamp='yesterday'/>")
    backend.receive("x", stanza_id="dated",
                    extra="<delay xmlns='urn:xmpp:delay' stamp='0001-01-01T00:00:00+01:00'/>")
    # more than it keeps
    client.receive(f"<message xmlns='jabber:client' from='{BOB}/p' type='weird'>"
                   + "".join(f"<body xml:lang='l{i}'>b</body>" for i in range(40))
                   + "</message>")
    client.receive(f"<message xmlns='jabber:client' from='{BOB}/p'>"
                   "<body>ok</body></message>")
    messages = await backend.stored(4)
    dated = messages.pop(1)
    assert dated["timestamp"] == dated["received"]
    assert [m["from"] for m in messages] == [f"{BOB}/phone", f"{BOB}/p", f"{BOB}/p"]
    assert (messages[0]["body"], messages[0]["extra"]) == ("x" * 10, {"truncated": True})
    assert messages[0]["origin_id"] is None
    assert (len(messages[1]["bodies"]), messages[1]["type"]) == (10, "normal")
    assert messages[1]["extra"] == {"truncated": True}
    assert messages[2]["body"] == "ok"
    assert_logged(log_lines(), "message ignored: invalid sender '@bad'",
                  "message ignored: invalid sender 'bob@example.org/'",
                  "message ignored: invalid recipient 'a@b/'",
                  "error message from bob@example.org not stored",
                  "origin-id longer than 255 characters",
                  "a delay with an invalid time",
                  "texts cut at 10 characters")


@pytest_twisted.ensureDeferred
async def test_bad_parameters_are_refused_with_what_to_do(storage):
    backend = Backend(storage, {"plugin MESSAGES": {"max_body": 10}})
    await backend.connect()
    call = backend.host.call
    for params, error, text in (
            ({"to": "@bad", "body": "x"}, InvalidMessage, "invalid recipient"),
            ({"to": BOB, "body": "x" * 11}, InvalidMessage, "more than 10"),
            ({"to": BOB, "body": ""}, InvalidMessage, "nothing to send"),
            ({"to": BOB, "body": "a\x00b"}, InvalidMessage, "XML forbids"),
            ({"to": BOB, "body": {"e n": "x"}}, InvalidMessage, "language tag"),
            ({"to": BOB, "body": "x", "thread": "t" * 300}, InvalidMessage, "thread"),
            ({"to": BOB, "body": "x", "type": "groupchat"}, InvalidParams, "type"),
            ({"to": BOB, "body": "x", "extra": {"k": "v" * 70_000}}, InvalidMessage,
             "extra"),
            ({"to": BOB, "body": 3}, InvalidParams, "body"),
    ):
        with pytest.raises(error, match=text):
            await call("message_send", profile="alice", **params)
    assert backend.sent_messages() == []
    with pytest.raises(NotFound):
        await call("message_send", profile="bob", to=BOB, body="x")
    for params, error, text in (
            ({"with_jid": "@bad"}, InvalidMessage, "invalid JID"),
            ({"limit": 0}, InvalidMessage, "limit"),
            ({"limit": 5000}, InvalidMessage, "limit"),
            ({"since": "last tuesday"}, InvalidMessage, "no ISO 8601 date"),
            ({"until": "0001-01-01T00:00:00+01:00"}, InvalidMessage, "no ISO 8601 date"),
            ({"search": "   "}, InvalidMessage, "at least one word"),
            ({"types": ["groupchat"]}, InvalidMessage, "unknown message type"),
            ({"before": "no-such-uid"}, NotFound, "no message"),
            ({"order": "random"}, InvalidParams, "order"),
    ):
        with pytest.raises(error, match=text):
            await call("history_get", profile="alice", **params)
    with pytest.raises(NotFound):
        await call("message_get", profile="alice", uid="x" * 1000)


@pytest_twisted.ensureDeferred
async def test_history_is_filtered_and_searched_through_the_bridge(backend):
    await backend.connect()
    backend.receive("the cat sat", sender=f"{BOB}/a")
    backend.receive("a dog", sender="carol@example.org/b")
    backend.receive("cat and dog", sender=f"{BOB}/a")
    await backend.stored(3)
    call = backend.host.call
    page = await call("history_get", profile="alice", with_jid=f"{BOB}/other", limit=1)
    assert ([m["body"] for m in page["messages"]], page["more"]) == (["cat and dog"],
                                                                     True)
    older = await call("history_get", profile="alice", with_jid=BOB,
                       before=page["messages"][0]["uid"])
    assert ([m["body"] for m in older["messages"]], older["more"]) == (["the cat sat"],
                                                                       False)
    found = await call("history_get", profile="alice", search="dog")
    assert [m["body"] for m in found["messages"]] == ["cat and dog", "a dog"]
    since = await call("history_get", profile="alice", since="2000-01-01",
                       until="2000-01-02")
    assert since["messages"] == []


@pytest_twisted.ensureDeferred
async def test_texts_in_too_many_languages_are_left_out_with_a_log_line(backend,
                                                                        log_lines):
    await backend.connect()
    backend.client.receive(f"<message xmlns='jabber:client' from='{BOB}/p'>"
                           + "".join(f"<body xml:lang='l{i}'>b{i}</body>"
                                     for i in range(40))
                           + "<body xml:lang='l1'>again</body><body/></message>")
    [message] = await backend.stored(1)
    assert message["bodies"] == {f"l{i}": f"b{i}" for i in range(32)}
    assert any("body texts in more than 32 languages" in line for line in log_lines())
