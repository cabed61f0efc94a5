"""Messages against the private Prosody and ejabberd, on SQLite and PostgreSQL.

A real backend (presence, disco and messages plugins) holds a profile; an independent
client (slixmpp) is the contact.  Messages go both ways through ``li``, as a user would
send and read them, and each is in the history once, with its origin-id, across a
restart of the backend.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, threads

slixmpp = pytest.importorskip("slixmpp")

from tests.contact import Contact  # noqa: E402 - only once slixmpp is known there
from tests.integration.test_roster import li_json, run_li  # noqa: E402
from tests.integration.test_roster import start as start_roster  # noqa: E402
from tests.pubsub_support import BackendFactory, until  # noqa: E402

pytestmark = pytest.mark.integration

PLUGINS = ("PRESENCE", "ROSTER", "XEP-0030", "MESSAGES", "XEP-0280")


@pytest.fixture
def make_backend(tmp_path, db_url):
    factory = BackendFactory(tmp_path / "local", db_url, plugins=PLUGINS)
    yield factory
    pytest_twisted.blockon(factory.close())


async def start(make_backend: Any, info: Any, owner: Any, create: bool = True) -> Any:
    """A backend with the profile connected, its roster fetched (the initial presence
    goes: the server routes messages to the bare JID here; before, it keeps them
    offline and delivers them later, with a delay whose time counts whole seconds)."""
    backend = await start_roster(make_backend, info, owner, create)
    # the question about stanza-ids answered: messages are read from then on
    checked = backend.plugins["MESSAGES"].stanza_ids
    await until(lambda: defer.succeed("owner" in checked), "the server's features")
    # the test servers offer carbons (XEP-0280): enabled before messages are read
    carbons = backend.plugins["XEP-0280"].enabled
    await until(lambda: defer.succeed(carbons.get("owner")), "carbons enabled")
    return backend


async def history(backend: Any, jid: str) -> list[dict[str, Any]]:
    return await li_json(backend, "message", "history", jid, "-p", "owner")


@pytest_twisted.ensureDeferred
async def test_messages_both_ways_are_stored_once_through_li(
        xmpp_server, make_backend, accounts, contact):
    owner, other = accounts
    backend = await start(make_backend, xmpp_server, owner)
    status, out, err = await run_li(backend, "message", "send", other.jid,
                                    "hello from li ☕", "-p", "owner")
    assert status == 0, err
    uid = out.strip()
    await until(lambda: defer.succeed(bool(contact.messages)),
                "the message reaching the contact")
    [(sender, body, origin_id)] = contact.messages
    assert (sender.split("/")[0], body) == (owner.jid, "hello from li ☕")
    sent = await li_json(backend, "message", "history", "-p", "owner", "-M", "1")
    assert sent[0]["uid"] == uid
    # the origin-id sent is the one stored
    assert origin_id == sent[0]["origin_id"]

    # the contact answers, twice the same text: two messages
    await threads.deferToThread(contact.send_message, owner.jid, "hello back")
    await threads.deferToThread(contact.send_message, owner.jid, "hello back")

    async def both() -> list[dict[str, Any]]:
        messages = await history(backend, other.jid)
        return messages if len(messages) == 3 else []

    messages = await until(both, "the contact's messages in the history")
    assert [(m["direction"], m["body"]) for m in messages] == [
        ("out", "hello from li ☕"), ("in", "hello back"), ("in", "hello back")], [
        (m["timestamp"], m["received"], m["extra"]) for m in messages]
    assert messages[1]["from"].split("/")[0] == other.jid
    assert len({m["uid"] for m in messages}) == 3
    # the servers are configured without an archive: they give no stanza-id, and a
    # stanza-id would not be trusted
    assert backend.plugins["MESSAGES"].stanza_ids["owner"] is False
    assert all(m["stanza_id"] is None for m in messages)
    text = (await run_li(backend, "message", "history", other.jid, "-p", "owner"))[1]
    assert text.splitlines()[0].endswith(f"> {other.jid}: hello from li ☕")

    # after a restart, the history is the same, and new messages add to it
    await backend.stopService()
    backend = await start(make_backend, xmpp_server, owner, create=False)
    assert await history(backend, other.jid) == messages
    await threads.deferToThread(contact.send_message, owner.jid, "after the restart")

    async def four() -> list[dict[str, Any]]:
        found = await history(backend, other.jid)
        return found if len(found) == 4 else []

    assert (await until(four, "the message after the restart"))[-1]["body"] == (
        "after the restart")
    found = await li_json(backend, "message", "history", "-f", "restart", "-p", "owner")
    assert [m["body"] for m in found] == ["after the restart"]


@pytest_twisted.ensureDeferred
async def test_a_message_to_an_invalid_jid_is_refused_and_the_profile_goes_on(
        xmpp_server, make_backend, accounts, contact):
    owner, other = accounts
    backend = await start(make_backend, xmpp_server, owner)
    status, out, err = await run_li(backend, "message", "send", "@nowhere", "x",
                                    "-p", "owner")
    assert (status, out) == (1, "")
    assert "invalid recipient" in err
    status, out, err = await run_li(backend, "message", "send", other.jid, "still here",
                                    "-p", "owner")
    assert status == 0, err
    await until(lambda: defer.succeed(bool(contact.messages)), "the next message")
    assert contact.messages[0][1] == "still here"
    assert json.loads((await run_li(backend, "message", "history", "-p", "owner",
                                    "--output", "json"))[1])[0]["body"] == "still here"


@pytest_twisted.ensureDeferred
async def test_carbons_of_the_accounts_other_device_are_stored_with_their_direction(
        xmpp_server, make_backend, accounts, contact):
    owner, other = accounts
    backend = await start(make_backend, xmpp_server, owner)
    # the account's other device: an independent client logged in as the owner
    device = Contact(xmpp_server, owner)
    await threads.deferToThread(device.start)
    try:
        device_jid = await threads.deferToThread(
            device.do, lambda: device.xmpp.boundjid.full)
        await threads.deferToThread(device.send_message, other.jid, "from my phone")

        async def one() -> list[dict[str, Any]]:
            found = await history(backend, other.jid)
            return found if len(found) == 1 else []

        [sent] = await until(one, "the sent carbon in the history")
        assert (sent["direction"], sent["body"], sent["from"]) == (
            "out", "from my phone", device_jid)
        # a contact writes to the other device only: a received carbon
        await threads.deferToThread(contact.send_message, device_jid, "to your phone")

        async def two() -> list[dict[str, Any]]:
            found = await history(backend, other.jid)
            return found if len(found) == 2 else []

        messages = await until(two, "the received carbon in the history")
        assert [(m["direction"], m["body"], m["to"]) for m in messages] == [
            ("out", "from my phone", other.jid), ("in", "to your phone", device_jid)]
    finally:
        await threads.deferToThread(device.close)
