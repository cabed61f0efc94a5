"""Service discovery and entity capabilities against the private Prosody and ejabberd,
on SQLite and PostgreSQL, with an independent client (slixmpp) as the contact.

The contact asks the backend's full JID what it is: it must list the features of the
loaded plugins and hash, by slixmpp's own XEP-0115 code, to the backend's ``ver``; the
backend asks the contact and its server through its bridge methods.
"""

from __future__ import annotations

import pytest
import pytest_twisted

from libervia.backend.plugins.plugin_xep_0030 import DiscoError

pytest.importorskip("slixmpp")

from tests.pubsub_support import (  # noqa: E402 - only once slixmpp is known there
    PLUGINS,
    BackendFactory,
    Publisher,
    Reader,
)

pytestmark = pytest.mark.integration

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_CAPS = "http://jabber.org/protocol/caps"
CONTACT_PLUGINS = ("xep_0004", "xep_0030", "xep_0060", "xep_0115")


@pytest.fixture
def make_backend(tmp_path, db_url):
    factory = BackendFactory(tmp_path / "local", db_url, plugins=(*PLUGINS, "XEP-0115"))
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
