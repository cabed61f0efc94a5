"""Roster and presence against the private Prosody and ejabberd, on SQLite and PostgreSQL.

A real backend (presence and roster plugins) holds a profile; an independent client
(slixmpp, in a thread with its own event loop) is the contact.  Everything the profile
does goes through ``li``, as a user would: mutual subscription, presence changes seen
both ways, the roster kept across a restart of the backend (asked again with its
version where the server versions rosters), a roster push from a stranger refused.
"""

from __future__ import annotations

import io
import json
from typing import Any
from xml.etree import ElementTree

import pytest
import pytest_twisted
from twisted.internet import defer, threads

from libervia.backend.memory.storage import RosterEntry
from libervia.backend.plugins.roster import NS_ROSTER
from libervia.backend.plugins.roster.stanzas import parse_item, roster_query
from libervia.backend.xmpp.iq import IQRequest
from libervia.backend.xmpp.profiles import ConnectionOptions
from libervia.cli.main import main as li_main

slixmpp = pytest.importorskip("slixmpp")

from slixmpp.exceptions import IqError  # noqa: E402

from tests.contact import Contact  # noqa: E402 - only once slixmpp is known there
from tests.pubsub_support import BackendFactory, until  # noqa: E402

pytestmark = pytest.mark.integration

TIMEOUT = 30
PLUGINS = ("PRESENCE", "ROSTER")


def run_li(backend: Any, *argv: str) -> defer.Deferred:
    """``li ARGV`` against ``backend``; a Deferred of (status, stdout, stderr)."""
    socket = str(backend.getServiceNamed("bridge").path)

    def run() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = li_main(["--socket", socket, *argv], out=out, err=err)
        return status, out.getvalue(), err.getvalue()

    return threads.deferToThread(run)


async def li_json(backend: Any, *argv: str) -> Any:
    status, out, err = await run_li(backend, *argv, "--output", "json")
    assert status == 0, err
    return json.loads(out) if out.strip() else None


@pytest.fixture
def make_backend(tmp_path, db_url):
    factory = BackendFactory(tmp_path / "local", db_url, plugins=PLUGINS)
    yield factory
    pytest_twisted.blockon(factory.close())


def in_thread(func: Any, *args: Any, **kwargs: Any) -> defer.Deferred:
    """A blocking call of the contact, out of the reactor's thread."""
    return threads.deferToThread(func, *args, **kwargs)


def received(contact: Contact, jid: str, type_: str = "available",
             show: str = "") -> defer.Deferred:
    return defer.succeed(contact.presence_from(jid, type_, show))


async def start(make_backend: Any, info: Any, owner: Any, create: bool = True) -> Any:
    backend = await make_backend()
    if create:
        await backend.profiles.create("owner", owner.jid, owner.password, ConnectionOptions(
            host=info.address, port=info.c2s_port, ca_file=str(info.ca_file)))
    status, __, err = await run_li(backend, "profile", "connect", "owner")
    assert status == 0, err
    # the roster is fetched once the stream is up, before the initial presence
    fetches = backend.plugins["ROSTER"].last_fetch
    await until(lambda: defer.succeed("owner" in fetches), "the roster fetched")
    return backend


async def roster_entry(backend: Any, jid: str) -> dict[str, Any] | None:
    entries = await li_json(backend, "roster", "list", "-p", "owner")
    return next((e for e in entries if e["jid"] == jid), None)


async def server_item(backend: Any, jid: str) -> RosterEntry:
    """The item of ``jid`` in the roster the owner's server holds, asked of it now."""
    client = backend.clients.get("owner")
    answer = await client.request(IQRequest(None, "get", roster_query(), TIMEOUT))
    query = next(answer.elements(NS_ROSTER, "query"))
    items = [parse_item(i) for i in query.elements(NS_ROSTER, "item")]
    return next(i for i in items if i is not None and i.jid == jid)


@pytest_twisted.ensureDeferred
async def test_mutual_subscription_and_presence_both_ways_through_li(
        xmpp_server, make_backend, accounts, contact):
    owner, other = accounts
    backend = await start(make_backend, xmpp_server, owner)
    # the owner adds the contact and asks to see its presence
    entry = await li_json(backend, "roster", "add", other.jid, "--name", "Contact",
                          "--group", "Friends", "-p", "owner")
    assert (entry["jid"], entry["name"], entry["groups"]) == (other.jid, "Contact",
                                                              ["Friends"])
    await until(lambda: received(contact, owner.jid, "subscribe"),
                "the subscription request reaching the contact")
    # the contact accepts, and asks the same
    await in_thread(contact.send_presence, pto=owner.jid, ptype="subscribed")
    await in_thread(contact.send_presence, pto=owner.jid, ptype="subscribe")

    async def pending() -> list[dict[str, Any]]:
        return await li_json(backend, "roster", "pending", "-p", "owner")

    [request] = await until(pending, "the contact's request waiting in li")
    assert request["jid"] == other.jid
    status, out, err = await run_li(backend, "roster", "accept", other.jid, "-p", "owner")
    assert (status, out) == (0, f"{other.jid} accepted\n"), err
    assert await pending() == []

    async def mutual() -> bool:
        entry = await roster_entry(backend, other.jid)
        return entry is not None and entry["subscription"] == "both"

    await until(mutual, "a mutual subscription in the owner's roster")
    assert await in_thread(contact.subscription, owner.jid) == "both"

    # new groups for the contact: its name is kept, and the server holds the change
    entry = await li_json(backend, "roster", "update", other.jid, "--group", "Chess",
                          "--group", "Friends", "-p", "owner")
    assert (entry["name"], entry["groups"], entry["subscription"]) == (
        "Contact", ["Chess", "Friends"], "both")
    kept = await server_item(backend, other.jid)
    assert (kept.name, sorted(kept.groups), kept.subscription) == (
        "Contact", ["Chess", "Friends"], "both")
    # (servers keep groups as a set: their pushes give them in any order)
    assert sorted((await roster_entry(backend, other.jid))["groups"]) == [
        "Chess", "Friends"]

    # presence, both ways: the contact's is seen by the owner...
    await in_thread(contact.send_presence, pshow="away", pstatus="lunch")

    async def contact_away() -> bool:
        answer = await li_json(backend, "presence", "get", other.jid, "-p", "owner")
        resources = answer["contacts"][0]["resources"]
        return bool(resources) and resources[0]["show"] == "away" and (
            resources[0]["status"] == "lunch")

    await until(contact_away, "the contact's presence seen by the owner")
    entry = await roster_entry(backend, other.jid)
    assert entry["presence"]["show"] == "away"
    # ... and the owner's by the contact
    await li_json(backend, "presence", "set", "--show", "dnd", "--status", "busy",
                  "-p", "owner")
    await until(lambda: received(contact, owner.jid, show="dnd"),
                "the owner's presence seen by the contact")
    assert any(f.startswith(owner.jid) and status == "busy"
               for __, f, __, status in contact.presences)
    # leaving says unavailable
    status, __, err = await run_li(backend, "profile", "disconnect", "owner")
    assert status == 0, err
    await until(lambda: received(contact, owner.jid, "unavailable"),
                "the owner's unavailable presence")


@pytest_twisted.ensureDeferred
async def test_roster_presence_and_requests_survive_a_restart(
        xmpp_server, make_backend, accounts, contact):
    owner, other = accounts
    backend = await start(make_backend, xmpp_server, owner)
    client = backend.clients.get("owner")
    versioned = backend.plugins["ROSTER"].versioning["owner"]
    # as the tests configure them, Prosody versions rosters, ejabberd does not (its
    # mod_roster default): doc/developer/presence_roster.rst records it
    assert versioned is (xmpp_server.kind == "prosody")
    await li_json(backend, "roster", "add", other.jid, "-p", "owner")
    await li_json(backend, "presence", "set", "--show", "xa", "--priority", "7",
                  "-p", "owner")
    await in_thread(contact.send_presence, pto=owner.jid, ptype="subscribe")
    await until(lambda: li_json(backend, "roster", "pending", "-p", "owner"),
                "the contact's request")
    stored = await backend.storage.roster.get_roster("owner")
    assert [e.jid for e in stored.items] == [other.jid]
    if versioned:
        assert stored.version
    else:
        assert stored.version is None
    assert client.is_connected
    await backend.stopService()

    # restart: the request is still to be answered, the stored presence is sent again
    contact.presences.clear()
    backend = await start(make_backend, xmpp_server, owner, create=False)
    roster = backend.plugins["ROSTER"]
    assert roster.versioning["owner"] is versioned
    # an unchanged roster is not downloaded again where the server versions rosters
    assert roster.last_fetch["owner"] == ("unchanged" if versioned else "full")
    [request] = await li_json(backend, "roster", "pending", "-p", "owner")
    assert request["jid"] == other.jid
    entry = await roster_entry(backend, other.jid)
    assert entry["ask"] is True
    await li_json(backend, "roster", "accept", other.jid, "-p", "owner")
    await until(lambda: received(contact, owner.jid, show="xa"),
                "the stored presence sent at the next connection")
    # removing the contact cancels both subscriptions: the server tells the contact
    # (slixmpp's own roster is not always updated by ejabberd's pushes: the presence
    # the contact receives is what RFC 6121 says)
    await li_json(backend, "roster", "remove", other.jid, "-p", "owner")
    assert await roster_entry(backend, other.jid) is None
    await until(lambda: received(contact, owner.jid, "unsubscribed"),
                "the contact's subscription cancelled")


@pytest_twisted.ensureDeferred
async def test_a_roster_push_from_a_stranger_is_refused_and_the_profile_goes_on(
        xmpp_server, make_backend, accounts, contact):
    owner, other = accounts
    backend = await start(make_backend, xmpp_server, owner)
    client = backend.clients.get("owner")

    async def forge() -> str:
        # a roster push, sent by the contact to the owner's full JID
        iq = contact.xmpp.make_iq_set(ito=client.bound_jid.full())
        query = ElementTree.Element("{jabber:iq:roster}query")
        ElementTree.SubElement(query, "{jabber:iq:roster}item",
                               jid="mallory@evil.example", subscription="both")
        iq.append(query)
        try:
            await iq.send(timeout=TIMEOUT)
        except IqError as e:
            return e.iq["error"]["condition"]
        return "result"

    assert await in_thread(contact.do, forge) == "service-unavailable"
    assert await li_json(backend, "roster", "list", "-p", "owner") == []
    # the profile goes on
    assert (await li_json(backend, "presence", "set", "--show", "chat", "-p", "owner")
            )["show"] == "chat"
    assert client.is_connected
