"""XEP-0030 client: requests as sent, answers as parsed, whatever the entity sends."""

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber.jid import JID

from libervia.backend.plugins.plugin_xep_0030 import (
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    XEP_0030,
    DiscoInfo,
    DiscoItem,
    Identity,
)
from tests.unit.plugins.iq_stub import StubClient, iq_result

SERVER = JID("example.org")


@pytest.fixture
def disco():
    return XEP_0030(host=None)


@pytest.fixture
def client():
    return StubClient()


@pytest_twisted.ensureDeferred
async def test_get_info_asks_the_entity_or_its_node_and_parses_everything(disco, client):
    client.answers.append(iq_result(
        f"<query xmlns='{NS_DISCO_INFO}' node='n'>"
        "<identity category='pubsub' type='service' name='Prosody PubSub Service'/>"
        "<identity category='server' type='im'/>"
        "<feature var='http://jabber.org/protocol/pubsub'/>"
        "<feature var='urn:xmpp:order-by:1'/>"
        "<x xmlns='jabber:x:data' type='result'>"
        "<field var='FORM_TYPE' type='hidden'>"
        "<value>http://jabber.org/protocol/pubsub#meta-data</value></field>"
        "<field var='pubsub#type'><value>urn:example</value></field></x>"
        "</query>"))
    info = await disco.get_info(client, SERVER, "n")
    sent = client.sent[0]
    assert (sent["type"], sent["to"]) == ("get", "example.org")
    assert sent.query.uri == NS_DISCO_INFO and sent.query["node"] == "n"
    assert info.identities == [Identity("pubsub", "service", "Prosody PubSub Service"),
                               Identity("server", "im")]
    assert info.names == ["Prosody PubSub Service"]
    assert info.features == ["http://jabber.org/protocol/pubsub", "urn:xmpp:order-by:1"]
    form = info.forms["http://jabber.org/protocol/pubsub#meta-data"]
    assert form.getValues()["pubsub#type"] == "urn:example"


@pytest_twisted.ensureDeferred
async def test_get_info_of_the_entity_itself_names_no_node(disco, client):
    client.answers.append(iq_result(f"<query xmlns='{NS_DISCO_INFO}'/>"))
    assert await disco.get_info(client, SERVER) == DiscoInfo()
    assert client.sent[0].query.getAttribute("node") is None


@pytest.mark.parametrize("answer", [
    "",  # no query at all
    f"<query xmlns='{NS_DISCO_INFO}'><identity/><identity category='c'/>"
    "<feature/><feature var=''/></query>",
    f"<query xmlns='{NS_DISCO_INFO}'><x xmlns='jabber:x:data' type='bogus'/>"
    "<x xmlns='jabber:x:data' type='result'><field type='no-such-type' var='a'/></x>"
    "</query>",
    "<query xmlns='urn:other'><feature var='x'/></query>",
])
@pytest_twisted.ensureDeferred
async def test_get_info_leaves_out_what_is_malformed(disco, client, answer):
    client.answers.append(iq_result(answer))
    info = await disco.get_info(client, SERVER)
    assert info.identities == [] and info.features == []


@pytest_twisted.ensureDeferred
async def test_get_info_errors_reach_the_caller(disco, client):
    client.answers.append(jabber_error.StanzaError("item-not-found"))
    with pytest.raises(jabber_error.StanzaError):
        await disco.get_info(client, SERVER, "gone")
    client.answers.append(defer.TimeoutError())
    with pytest.raises(defer.TimeoutError):
        await disco.get_info(client, SERVER)


@pytest_twisted.ensureDeferred
async def test_get_items_keeps_every_item_in_order(disco, client):
    client.answers.append(iq_result(
        f"<query xmlns='{NS_DISCO_ITEMS}' node='blog'>"
        "<item jid='pubsub.example.org' name='i1'/>"
        "<item jid='pubsub.example.org' node='sub' name=''/>"
        "<item name='no-jid'/>"
        "<item jid='@bad@' name='bad-jid'/>"
        "</query>"))
    items = await disco.get_items(client, JID("pubsub.example.org"), "blog")
    assert client.sent[0].query.uri == NS_DISCO_ITEMS
    assert client.sent[0].query["node"] == "blog"
    assert items == [DiscoItem(JID("pubsub.example.org"), None, "i1"),
                     DiscoItem(JID("pubsub.example.org"), "sub", None),
                     DiscoItem(None, None, "no-jid"),
                     DiscoItem(None, None, "bad-jid")]


@pytest_twisted.ensureDeferred
async def test_get_items_without_query_lists_nothing(disco, client):
    client.answers.append(iq_result(""))
    assert await disco.get_items(client, SERVER) == []
