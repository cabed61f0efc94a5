"""Service discovery and entity capabilities against the private Prosody and ejabberd,
on SQLite and PostgreSQL, with an independent client (slixmpp) as the contact.

The contact asks the backend's full JID what it is: it must list the features of the
loaded plugins and hash, by slixmpp's own XEP-0115 code, to the backend's ``ver``; the
backend asks the contact and its server through its bridge methods.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID

from libervia.backend.plugins.plugin_xep_0030 import DiscoError

pytest.importorskip("slixmpp")

from tests.pubsub_support import (  # noqa: E402 - only once slixmpp is known there
    PLUGINS,
    BackendFactory,
    Publisher,
    Reader,
    atom,
    until,
)

pytestmark = pytest.mark.integration

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_CAPS = "http://jabber.org/protocol/caps"
CONTACT_PLUGINS = ("xep_0004", "xep_0030", "xep_0060", "xep_0115")


@pytest.fixture
def make_backend(tmp_path, db_url):
    factory = BackendFactory(tmp_path / "local", db_url,
                             plugins=(*PLUGINS, "XEP-0115", "PRESENCE", "ROSTER"))
    yield factory
    pytest_twisted.blockon(factory.close())


@pytest.fixture
def contact(xmpp_server):
    """The contact: slixmpp logged in as the server's second user, until the end."""
    contact = Publisher(xmpp_server, user=xmpp_server.user(1), plugins=CONTACT_PLUGINS)
    pytest_twisted.blockon(contact.keep_session())
    yield contact
    pytest_twisted.blockon(contact.close())


def disco_of(jid: str, node: str | None = None):
    """A slixmpp session body: the disco#info of ``jid`` as plain data, with the
    XEP-0115 hash slixmpp computes of it."""
    async def body(xmpp, pubsub):
        iq = await xmpp.plugin["xep_0030"].get_info(jid=jid, node=node, local=False,
                                                    timeout=10)
        info = iq["disco_info"]
        return {"identities": sorted((c, t, n) for c, t, __, n in info["identities"]),
                "features": sorted(info["features"]),
                "node": info["node"] or None,
                "ver": xmpp.plugin["xep_0115"].generate_verstring(info, "sha-1")}

    return body


@pytest_twisted.ensureDeferred
async def test_a_contact_sees_the_plugins_features_and_the_backend_s_hash(
        make_backend, xmpp_server, contact):
    backend = await make_backend()
    reader = await Reader.connect(backend, xmpp_server, node="unused")
    full_jid = reader.client.bound_jid.full()
    disco = backend.plugins["XEP-0030"]
    caps = backend.plugins["XEP-0115"]
    declared = {NS_DISCO_INFO, NS_CAPS, "http://jabber.org/protocol/disco#items"}
    for info in backend.plugin_manager.loaded_infos():
        declared.update(info.features)
        declared.update(f"{node}+notify" for node in info.notify)

    seen = await contact.run(disco_of(full_jid))
    assert seen["identities"] == [("client", "pc", "Libervia")]
    assert seen["features"] == sorted(declared) == disco.own_features()
    assert seen["ver"] == caps.ver

    node = f"https://libervia.org#{caps.ver}"
    seen_node = await contact.run(disco_of(full_jid, node))
    assert seen_node["node"] == node
    assert (seen_node["features"], seen_node["ver"]) == (seen["features"], caps.ver)


@pytest_twisted.ensureDeferred
async def test_the_backend_asks_the_contact_and_its_server(make_backend, xmpp_server,
                                                          contact):
    backend = await make_backend()
    reader = await Reader.connect(backend, xmpp_server, node="unused")
    contact_jid = await contact.run(lambda xmpp, pubsub: _bound(xmpp))
    call = backend.bridge.call
    info = await call("disco_info", {"profile": reader.name, "jid": contact_jid})
    assert NS_DISCO_INFO in info["features"] and NS_CAPS in info["features"]
    assert [(i["category"], i["type"]) for i in info["identities"]] == [("client", "bot")]
    # the server lists its pubsub service
    items = await call("disco_items", {"profile": reader.name,
                                       "jid": xmpp_server.host})
    assert xmpp_server.pubsub_service in [i["jid"] for i in items["items"]]
    # a node the contact does not have: a typed error
    with pytest.raises(DiscoError):
        await call("disco_info", {"profile": reader.name, "jid": contact_jid,
                                  "node": "no-such-node"})
    # an entity that is not there: a typed error, the profile still up
    with pytest.raises(DiscoError):
        await call("disco_info", {"profile": reader.name,
                                  "jid": f"{contact_jid.split('/')[0]}/gone"})
    assert backend.clients.is_connected(reader.name)


async def _bound(xmpp) -> str:
    return xmpp.boundjid.full


# with the presence plugin: capabilities in presences, PEP notifications


NS_MICROBLOG = "urn:xmpp:microblog:0"


async def _befriend(xmpp, pubsub, contact_jid: str) -> None:
    """As the backend's account: subscribe to the contact, who (slixmpp's defaults)
    accepts and subscribes back; wait until both ways hold."""
    await xmpp.get_roster()
    xmpp.send_presence()
    if xmpp.client_roster[contact_jid]["subscription"] != "both":
        xmpp.send_presence(pto=contact_jid, ptype="subscribe")
    for __ in range(200):
        if xmpp.client_roster[contact_jid]["subscription"] == "both":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no mutual subscription with {contact_jid}")


async def _verstring(xmpp, jid: str) -> str | None:
    return await xmpp.plugin["xep_0115"].get_verstring(jid)


async def _publish_post(xmpp, pubsub, item_id: str) -> None:
    await pubsub.publish(xmpp.boundjid.bare, NS_MICROBLOG, id=item_id,
                         payload=atom(item_id, f"pushed {item_id}"))


@pytest.fixture
def friends(xmpp_server, contact):
    """The backend's account and the contact are mutually subscribed (arranged with
    slixmpp logged in as each account)."""
    pytest_twisted.blockon(contact.run(lambda xmpp, pubsub: _present(xmpp)))
    account = Publisher(xmpp_server, user=xmpp_server.user(0), plugins=CONTACT_PLUGINS)
    pytest_twisted.blockon(account.run(
        lambda xmpp, pubsub: _befriend(xmpp, pubsub, xmpp_server.user(1).jid)))
    return contact


async def _present(xmpp) -> None:
    xmpp.send_presence()


async def _present_with_caps(xmpp) -> str:
    """Send a presence with the contact's capabilities (slixmpp answers node#ver)."""
    caps = xmpp.plugin["xep_0115"]
    await caps.update_caps(xmpp.boundjid, broadcast=False)
    ver = await caps.get_verstring(xmpp.boundjid)
    presence = xmpp.make_presence()
    presence["caps"]["node"] = caps.caps_node
    presence["caps"]["hash"] = caps.hash
    presence["caps"]["ver"] = ver
    presence.send()
    return ver


def _record_caps(seen: list) -> object:
    """A slixmpp session body: from now on, the ``<c/>`` of each available presence
    the contact receives goes to ``seen`` as ``(from, hash, node, ver)``."""
    async def body(xmpp, pubsub):
        def record(presence):
            caps = presence["caps"]
            seen.append((presence["from"].full, caps["hash"] or None,
                         caps["node"] or None, caps["ver"] or None))
        xmpp.add_event_handler("presence_available", record)
    return body


def independent_ver(seen: dict) -> str:
    """XEP-0115 §5.1 written out for an answer without forms: SHA-1 of the sorted
    identities then the sorted features, each ended by '<'."""
    identities = sorted(f"{c}/{t}//{n or ''}" for c, t, n in seen["identities"])
    text = "".join(i + "<" for i in identities) + "".join(
        f + "<" for f in sorted(seen["features"]))
    return base64.b64encode(hashlib.sha1(text.encode("utf-8")).digest()).decode("ascii")


@pytest_twisted.ensureDeferred
async def test_caps_in_presence_and_a_contact_s_blog_cached_through_notify_alone(
        make_backend, xmpp_server, friends):
    contact = friends
    bob = xmpp_server.user(1).jid
    seen_caps: list = []
    await contact.run(_record_caps(seen_caps))
    backend = await make_backend()
    assert "PRESENCE" in backend.plugins, "the presence plugin sends the caps"
    reader = await Reader.connect(backend, xmpp_server, node=NS_MICROBLOG)
    full_jid = reader.client.bound_jid.full()
    caps = backend.plugins["XEP-0115"]

    # the contact received the backend's presence, with its <c/>...
    async def caps_received():
        return [c for c in seen_caps if c[0] == full_jid]
    [(__, algo, node, ver), *__] = await until(caps_received,
                                                "the backend's presence with its caps")
    assert (algo, node, ver) == ("sha-1", "https://libervia.org", caps.ver)
    # ... whose node#ver, asked of the full JID, lists the plugins' features and
    # hashes to ver, by slixmpp's code and by the specification written out
    declared = {NS_DISCO_INFO, NS_CAPS, "http://jabber.org/protocol/disco#items"}
    for info in backend.plugin_manager.loaded_infos():
        declared.update(info.features)
        declared.update(f"{n}+notify" for n in info.notify)
    assert f"{NS_MICROBLOG}+notify" in declared
    answered = await contact.run(disco_of(full_jid, f"{node}#{ver}"))
    assert answered["features"] == sorted(declared)
    assert answered["ver"] == independent_ver(answered) == ver

    # slixmpp's own XEP-0115 code verified it too
    async def contact_verified() -> bool:
        return await contact.run(lambda xmpp, pubsub: _verstring(xmpp, full_jid)) == (
            caps.ver)
    await until(contact_verified, "the contact verifying the backend's capabilities")

    # a feature added while connected: a new presence carries the new hash
    backend.plugins["XEP-0030"].add_feature("urn:example:added-while-connected")
    assert caps.ver != ver

    async def new_caps_received():
        return [c for c in seen_caps if c[0] == full_jid and c[3] == caps.ver]
    await until(new_caps_received, "the backend's presence with its new hash")
    await until(contact_verified, "the contact verifying the new hash")

    # the contact's capabilities (in the presence it sends now) were resolved,
    # verified and stored
    bob_ver = await contact.run(lambda xmpp, pubsub: _present_with_caps(xmpp))
    bob_full = await contact.run(lambda xmpp, pubsub: _bound(xmpp))
    client = reader.client

    async def contact_known():
        return caps.entity_caps(client, JID(bob_full))
    algo, ver = await until(contact_known, "the contact's capabilities")
    assert (algo, ver) == ("sha-1", bob_ver)
    await until(lambda: backend.storage.caps.get_caps(algo, ver),
                "the contact's capabilities stored")
    assert backend.plugins["XEP-0030"].cached_info(client, JID(bob_full)) is not None

    # a post on the contact's blog reaches the cache with no request of ours
    item_id = f"post-{secrets.token_hex(4)}"
    await contact.run(lambda xmpp, pubsub: _publish_post(xmpp, pubsub, item_id))

    async def cached():
        node = await backend.storage.pubsub.get_pubsub_node(reader.name, bob, NS_MICROBLOG)
        if node is None or backend.plugins["PUBSUB_CACHE"].node_state(node)[
                "state"] != "completed":
            return None
        items, __ = await backend.storage.pubsub.get_items(node.id)
        return item_id in [i.name for i in items]
    await until(cached, "the contact's post in the cache")

    # another backend on the same database knows the contact's hash without asking
    await backend.stopService()
    again = await make_backend()
    asked = []
    disco = again.plugins["XEP-0030"]
    ask = disco.ask_info_element

    async def recording(client, entity, node=None, timeout=None):
        asked.append(node)
        return await ask(client, entity, node, timeout)

    disco.ask_info_element = recording
    reader = await Reader.connect(again, xmpp_server, node=NS_MICROBLOG, name=reader.name)
    client = reader.client
    await until(lambda: defer.succeed(disco.cached_info(client, JID(bob_full))),
                "the contact's capabilities after a restart")
    assert not [n for n in asked if n and n.endswith(f"#{ver}")]
