"""XEP-0030: requests as sent, answers as parsed and cached, whatever the entity sends;
the profile's own answers to whoever asks."""

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber.jid import JID

from libervia.backend.core.exceptions import NotFound
from libervia.backend.core.xml_tools import parse_xml
from libervia.backend.plugins.plugin_xep_0030 import (
    DEFAULT_TIMEOUT,
    MAX_FEATURES,
    MAX_FORMS,
    MAX_IDENTITIES,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    XEP_0030,
    DiscoError,
    DiscoInfo,
    DiscoItem,
    DiscoNotFound,
    DiscoTimeout,
    Identity,
    InvalidDiscoRequest,
)
from tests.unit.plugins.disco_env import (
    ACCOUNT,
    BOUND,
    DiscoHost,
    LoadedPlugins,
    StreamClient,
)
from tests.unit.plugins.iq_stub import StubClient, iq_result

SERVER = JID("example.org")


@pytest.fixture
def disco():
    return XEP_0030(DiscoHost())


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


# the cache


INFO = iq_result(f"<query xmlns='{NS_DISCO_INFO}'><identity category='server' type='im'/>"
                 "<feature var='urn:a'/></query>")


@pytest.fixture
def host():
    return DiscoHost({"plugin XEP-0030": {"cache_ttl": 60, "cache_size": 3}})


@pytest.fixture
def stream(host):
    return StreamClient(host)


@pytest_twisted.ensureDeferred
async def test_info_is_asked_once_then_answered_from_the_cache_until_it_expires(host,
                                                                             stream):
    disco = XEP_0030(host)
    stream.answers += [INFO, INFO]
    first = await disco.get_info(stream, SERVER)
    assert await disco.get_info(stream, SERVER) == first
    assert len(stream.sent) == 1
    host.reactor.advance(61)
    assert await disco.get_info(stream, SERVER) == first
    assert len(stream.sent) == 2


@pytest_twisted.ensureDeferred
async def test_cache_is_keyed_by_entity_and_node_and_bypassed_on_demand(host, stream):
    disco = XEP_0030(host)
    stream.answers += [INFO, INFO, INFO, INFO]
    await disco.get_info(stream, SERVER)
    await disco.get_info(stream, SERVER, "n")
    await disco.get_info(stream, JID("other.example.org"))
    assert len(stream.sent) == 3
    await disco.get_info(stream, SERVER, use_cache=False)
    assert len(stream.sent) == 4
    assert disco.cached_info(stream, SERVER, "n") is not None


@pytest_twisted.ensureDeferred
async def test_forget_drops_one_entity_or_the_whole_profile(host, stream):
    disco = XEP_0030(host)
    stream.answers += [INFO] * 5
    await disco.get_info(stream, SERVER)
    await disco.get_info(stream, SERVER, "n")
    await disco.get_info(stream, JID("other.example.org"))
    disco.forget(stream, SERVER)
    assert disco.cached_info(stream, SERVER) is None
    assert disco.cached_info(stream, SERVER, "n") is None
    assert disco.cached_info(stream, JID("other.example.org")) is not None
    disco.profile_disconnected(stream)
    assert disco.cached_info(stream, JID("other.example.org")) is None


@pytest_twisted.ensureDeferred
async def test_cache_keeps_the_most_recently_used_entries_of_a_profile(host, stream):
    disco = XEP_0030(host)
    stream.answers += [INFO] * 4
    for n in range(4):
        await disco.get_info(stream, JID(f"s{n}.example.org"))
    assert disco.cached_info(stream, JID("s0.example.org")) is None
    assert all(disco.cached_info(stream, JID(f"s{n}.example.org")) for n in (1, 2, 3))


@pytest_twisted.ensureDeferred
async def test_info_set_to_keep_does_not_expire(host, stream):
    disco = XEP_0030(host)
    info = DiscoInfo([Identity("client", "pc")], ["urn:x"])
    disco.set_info(stream, JID("bob@example.org/phone"), info, keep=True)
    host.reactor.advance(10_000)
    assert await disco.get_info(stream, JID("bob@example.org/phone")) is info
    assert stream.sent == []


@pytest_twisted.ensureDeferred
async def test_requests_made_while_one_is_on_its_way_share_its_answer(host, stream):
    disco = XEP_0030(host)
    waiting = defer.Deferred()
    stream.request = lambda request: (stream.sent.append(request), waiting)[1]
    first = defer.ensureDeferred(disco.get_info(stream, SERVER))
    second = defer.ensureDeferred(disco.get_info(stream, SERVER))
    waiting.callback(parse_xml(INFO))
    assert (await first) == (await second)
    assert len(stream.sent) == 1


@pytest_twisted.ensureDeferred
async def test_a_huge_answer_is_bounded_and_not_cached(host, stream):
    disco = XEP_0030(host)
    features = "".join(f"<feature var='urn:f{n}'/>" for n in range(MAX_FEATURES + 50))
    identities = "<identity category='c' type='t'/>" * (MAX_IDENTITIES + 5)
    forms = "".join(
        "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
        f"<value>urn:form{n}</value></field></x>" for n in range(MAX_FORMS + 3))
    stream.answers += [iq_result(f"<query xmlns='{NS_DISCO_INFO}'>{identities}{features}"
                                 f"{forms}</query>")]
    info = await disco.get_info(stream, JID("bob@example.org/evil"))
    assert info.truncated
    assert (len(info.features), len(info.identities), len(info.forms)) == (
        MAX_FEATURES, MAX_IDENTITIES, MAX_FORMS)
    assert disco.cached_info(stream, JID("bob@example.org/evil")) is None


# the bridge methods


@pytest_twisted.ensureDeferred
async def test_bridge_disco_info_gives_plain_data(host, stream):
    XEP_0030(host)
    stream.answers.append(iq_result(
        f"<query xmlns='{NS_DISCO_INFO}'><identity category='client' type='pc' "
        "name='Psi' xml:lang='en'/><feature var='urn:a'/>"
        "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
        "<value>urn:xmpp:dataforms:softwareinfo</value></field>"
        "<field var='os'><value>Mac</value></field></x></query>"))
    result = await host.call("disco_info", profile="alice", jid="bob@example.org/psi")
    assert result == {
        "jid": "bob@example.org/psi", "node": None,
        "identities": [{"category": "client", "type": "pc", "name": "Psi",
                        "lang": "en"}],
        "features": ["urn:a"],
        "forms": {"urn:xmpp:dataforms:softwareinfo": {"os": ["Mac"]}},
        "truncated": False,
    }


@pytest_twisted.ensureDeferred
async def test_bridge_disco_items_gives_plain_data(host, stream):
    XEP_0030(host)
    stream.answers.append(iq_result(
        f"<query xmlns='{NS_DISCO_ITEMS}'><item jid='pubsub.example.org' name='PubSub'/>"
        "<item jid='example.org' node='n'/></query>"))
    result = await host.call("disco_items", profile="alice", jid="example.org", node="x")
    assert stream.sent[0].query["node"] == "x"
    assert result == {"jid": "example.org", "node": "x", "items": [
        {"jid": "pubsub.example.org", "node": None, "name": "PubSub"},
        {"jid": "example.org", "node": "n", "name": None}]}


@pytest.mark.parametrize("params, error", [
    ({"jid": ""}, InvalidDiscoRequest),
    ({"jid": "@@bad@@"}, InvalidDiscoRequest),
    ({"jid": "bob@example..org"}, InvalidDiscoRequest),
    ({"jid": "bob@example.org/"}, InvalidDiscoRequest),
    ({"jid": "example.org", "node": ""}, InvalidDiscoRequest),
    ({"jid": "example.org", "node": "x" * 5000}, InvalidDiscoRequest),
    ({"jid": "example.org", "node": "a\x01b"}, InvalidDiscoRequest),
    ({"jid": "example.org", "profile": "nobody"}, NotFound),
])
@pytest.mark.parametrize("method", ["disco_info", "disco_items"])
@pytest_twisted.ensureDeferred
async def test_bridge_methods_refuse_what_they_cannot_send(host, stream, method, params,
                                                          error):
    XEP_0030(host)
    with pytest.raises(error):
        await host.call(method, **({"profile": "alice"} | params))
    assert stream.sent == []


@pytest.mark.parametrize("answer, error, condition", [
    (jabber_error.StanzaError("item-not-found"), DiscoNotFound, "item-not-found"),
    (jabber_error.StanzaError("service-unavailable"), DiscoError, "service-unavailable"),
])
@pytest.mark.parametrize("method", ["disco_info", "disco_items"])
@pytest_twisted.ensureDeferred
async def test_bridge_methods_turn_error_answers_into_typed_errors(host, stream, method,
                                                                  answer, error,
                                                                  condition):
    XEP_0030(host)
    stream.answers.append(answer)
    with pytest.raises(error) as caught:
        await host.call(method, profile="alice", jid="bob@example.org/x")
    assert caught.value.condition == condition
    assert "bob@example.org/x" in str(caught.value)


@pytest.mark.parametrize("method", ["disco_info", "disco_items"])
@pytest_twisted.ensureDeferred
async def test_an_answer_never_coming_ends_in_a_time_out(host, stream, method):
    XEP_0030(host)
    d = host.call(method, profile="alice", jid="bob@example.org/silent")
    host.reactor.advance(DEFAULT_TIMEOUT)
    with pytest.raises(DiscoTimeout, match="did not answer within"):
        await d


# the profile's own answers


PLUGINS = [
    {"name": "Blog", "import_name": "BLOG", "type": "XEP", "main": "Blog",
     "features": ["urn:example:blog"], "notify": ["urn:xmpp:microblog:0"]},
    {"name": "Plain", "import_name": "PLAIN", "type": "MISC", "main": "Plain"},
]


def info_request(to: str = BOUND.full(), node: str | None = None, type_: str = "get",
                 ns: str = NS_DISCO_INFO) -> str:
    node_attr = f" node='{node}'" if node is not None else ""
    return (f"<iq xmlns='jabber:client' type='{type_}' id='q1' from='bob@example.org/x' "
            f"to='{to}'><query xmlns='{ns}'{node_attr}/></iq>")


@pytest.fixture
def answering(host):
    host.plugin_manager = LoadedPlugins(PLUGINS)
    disco = XEP_0030(host)
    stream = StreamClient(host)
    stream.attach(disco.get_handler(stream))
    return disco, stream


def test_own_info_lists_the_core_and_the_plugins_features_and_notify_interests(
        answering):
    disco, stream = answering
    disco.add_feature("urn:example:added")
    disco.add_notify("urn:example:node")
    stream.receive(info_request())
    answer = stream.output[-1]
    assert (answer["type"], answer["to"], answer["id"]) == ("result", "bob@example.org/x",
                                                            "q1")
    info = DiscoInfo.from_element(answer.query)
    assert info.identities == [Identity("client", "pc", "Libervia")]
    assert info.features == sorted([
        NS_DISCO_INFO, NS_DISCO_ITEMS, "urn:example:blog", "urn:xmpp:microblog:0+notify",
        "urn:example:added", "urn:example:node+notify"])


def test_identity_comes_from_the_configuration():
    host = DiscoHost({"plugin XEP-0030": {"identity_category": "client",
                                          "identity_type": "bot",
                                          "identity_name": "My bot"}})
    disco = XEP_0030(host)
    stream = StreamClient(host)
    stream.attach(disco.get_handler(stream))
    stream.receive(info_request(to=ACCOUNT.full()))
    assert DiscoInfo.from_element(stream.output[-1].query).identities == [
        Identity("client", "bot", "My bot")]


def test_items_of_the_profile_are_an_empty_list(answering):
    __, stream = answering
    stream.receive(info_request(ns=NS_DISCO_ITEMS))
    answer = stream.output[-1]
    assert answer["type"] == "result" and answer.query.uri == NS_DISCO_ITEMS
    assert list(answer.query.elements()) == []


def test_a_node_of_a_plugin_is_answered_by_it(answering):
    disco, stream = answering
    disco.add_node_info(lambda client, requestor, node: DiscoInfo(
        [Identity("client", "pc")], [requestor.full()]) if node == "mine" else None)
    stream.receive(info_request(node="mine"))
    answer = stream.output[-1]
    assert answer.query["node"] == "mine"
    assert DiscoInfo.from_element(answer.query).features == ["bob@example.org/x"]


@pytest.mark.parametrize("request_xml, condition", [
    (info_request(node="unknown"), "item-not-found"),
    (info_request(node="x" * 5000), "item-not-found"),
    (info_request(ns=NS_DISCO_ITEMS, node="unknown"), "item-not-found"),
    (info_request(type_="set"), "bad-request"),
    (info_request(ns=NS_DISCO_ITEMS, type_="set"), "bad-request"),
])
def test_requests_the_profile_cannot_answer_get_an_error(answering, request_xml,
                                                         condition):
    __, stream = answering
    stream.receive(request_xml)
    answer = stream.output[-1]
    assert answer["type"] == "error" and answer["id"] == "q1"
    assert next(answer.error.elements()).name == condition


@pytest.mark.parametrize("request_xml", [
    info_request(to="carol@example.org/x"),
    info_request(type_="result"),
    info_request(type_="error"),
])
def test_answers_and_requests_for_others_are_left_alone(answering, request_xml):
    __, stream = answering
    stream.receive(request_xml)
    assert stream.output == []


def test_a_failing_node_provider_gives_an_internal_error_and_a_log_line(answering,
                                                                       log_lines):
    disco, stream = answering

    def broken(client, requestor, node):
        raise RuntimeError("boom")

    disco.add_node_info(broken)
    stream.receive(info_request(node="any"))
    assert next(stream.output[-1].error.elements()).name == "internal-server-error"
    assert any("boom" in line for line in log_lines())


def test_a_request_from_no_one_in_particular_is_answered(answering):
    __, stream = answering
    stream.receive(f"<iq xmlns='jabber:client' type='get' id='q2'>"
                   "<query xmlns='urn:other' node='not-this-one'/>"
                   f"<query xmlns='{NS_DISCO_INFO}'><junk/>text</query></iq>")
    assert stream.output[-1]["type"] == "result"
    assert stream.output[-1].query.getAttribute("node") is None
