"""XEP-0115: the hash against the specification's examples, the backend's own
capabilities in its presences and disco answers, and contacts' capabilities resolved
once, verified and kept in the database (on a stub XML stream)."""

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from libervia.backend.core.config import Config
from libervia.backend.core.xml_tools import parse_xml
from libervia.backend.plugins.plugin_presence import TRIGGER_INITIAL, Presence
from libervia.backend.plugins.plugin_xep_0030 import (
    NS_DISCO_INFO,
    XEP_0030,
    DiscoInfo,
)
from libervia.backend.plugins.plugin_xep_0115 import (
    NS_CAPS,
    PLUGIN_INFO,
    PRESENCE_SEND,
    RESOLVE_TIMEOUT,
    XEP_0115,
    InvalidCaps,
    caps_hash,
    verification_string,
)
from tests.unit.plugins.disco_env import BOUND, DiscoHost, LoadedPlugins, StreamClient
from tests.unit.plugins.iq_stub import iq_result
from tests.unit.plugins.presence_env import Host as PresenceEnvHost
from tests.unit.plugins.presence_env import StreamClient as PresenceStreamClient

# XEP-0115 section 5.2, "Simple Generation Example"
SIMPLE = (f"<query xmlns='{NS_DISCO_INFO}'>"
          "<identity category='client' name='Exodus 0.9.1' type='pc'/>"
          "<feature var='http://jabber.org/protocol/caps'/>"
          "<feature var='http://jabber.org/protocol/disco#info'/>"
          "<feature var='http://jabber.org/protocol/disco#items'/>"
          "<feature var='http://jabber.org/protocol/muc'/></query>")
SIMPLE_S = ("client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<"
            "http://jabber.org/protocol/disco#info<"
            "http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<")
SIMPLE_VER = "QgayPKawpkPSDYmwT/WM94uAlu0="

# XEP-0115 section 5.3, "Complex Generation Example"
COMPLEX = (f"<query xmlns='{NS_DISCO_INFO}' node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>"
           "<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>"
           "<identity xml:lang='el' category='client' name='\u03a8 0.11' type='pc'/>"
           "<feature var='http://jabber.org/protocol/caps'/>"
           "<feature var='http://jabber.org/protocol/disco#info'/>"
           "<feature var='http://jabber.org/protocol/disco#items'/>"
           "<feature var='http://jabber.org/protocol/muc'/>"
           "<x xmlns='jabber:x:data' type='result'>"
           "<field var='FORM_TYPE' type='hidden'>"
           "<value>urn:xmpp:dataforms:softwareinfo</value></field>"
           "<field var='ip_version' type='text-multi'><value>ipv4</value>"
           "<value>ipv6</value></field>"
           "<field var='os'><value>Mac</value></field>"
           "<field var='os_version'><value>10.5.1</value></field>"
           "<field var='software'><value>Psi</value></field>"
           "<field var='software_version'><value>0.11</value></field></x></query>")
COMPLEX_S = ("client/pc/el/\u03a8 0.11<client/pc/en/Psi 0.11<"
             "http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<"
             "http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
             "urn:xmpp:dataforms:softwareinfo<ip_version<ipv4<ipv6<os<Mac<os_version<"
             "10.5.1<software<Psi<software_version<0.11<")
COMPLEX_VER = "q07IKJEyjvHSyhy//CH0CxmKi8w="


def test_hash_of_the_simple_example_of_the_specification():
    query = parse_xml(SIMPLE)
    assert verification_string(query) == SIMPLE_S
    assert caps_hash(query) == SIMPLE_VER


def test_hash_of_the_complex_example_of_the_specification():
    query = parse_xml(COMPLEX)
    assert verification_string(query) == COMPLEX_S
    assert caps_hash(query, "sha-1") == COMPLEX_VER


def test_forms_without_a_hidden_form_type_are_left_out_of_the_hash():
    extra = ("<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'>"
             "<value>urn:not-hidden</value></field></x>"
             "<x xmlns='jabber:x:data' type='result'><field var='a'><value>b</value>"
             "</field></x>")
    assert caps_hash(parse_xml(SIMPLE.replace("</query>", extra + "</query>"))) == (
        SIMPLE_VER)


@pytest.mark.parametrize("extra", [
    "<feature var='http://jabber.org/protocol/muc'/>",
    "<identity category='client' name='Exodus 0.9.1' type='pc'/>",
    "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
    "<value>urn:f</value></field></x>" * 2,
    "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
    "<value>urn:f</value><value>urn:g</value></field></x>",
])
def test_answers_the_specification_forbids_to_hash_are_refused(extra):
    with pytest.raises(InvalidCaps):
        caps_hash(parse_xml(SIMPLE.replace("</query>", extra + "</query>")))


# the backend's own capabilities


@pytest.fixture
def host(storage):
    return DiscoHost(storage=storage, plugin_infos=[
        PLUGIN_INFO,
        {"name": "Blog", "import_name": "BLOG", "type": "XEP", "main": "Blog",
         "notify": ["urn:xmpp:microblog:0"]}])


@pytest.fixture
def plugins(host):
    disco = host.plugins["XEP-0030"] = XEP_0030(host)
    caps = host.plugins["XEP-0115"] = XEP_0115(host)
    return disco, caps


@pytest.fixture
def stream(host, plugins):
    disco, caps = plugins
    stream = StreamClient(host)
    stream.attach(disco.get_handler(stream))
    stream.attach(caps.get_handler(stream))
    return stream


def test_available_presences_carry_the_backend_s_hash(host, plugins):
    disco, caps = plugins
    presence = domish.Element((None, "presence"))
    assert host.trigger.point(PRESENCE_SEND, None, presence) is True
    c = presence.c
    assert (c.uri, c["hash"], c["node"]) == (NS_CAPS, "sha-1", "https://libervia.org")
    assert c["ver"] == caps_hash(disco.own_info().to_element())
    # once only, and never in an unavailable presence
    host.trigger.point(PRESENCE_SEND, None, presence)
    assert len(list(presence.elements(NS_CAPS, "c"))) == 1
    gone = domish.Element((None, "presence"))
    gone["type"] = "unavailable"
    host.trigger.point(PRESENCE_SEND, None, gone)
    assert list(gone.elements()) == []


def test_the_hash_follows_the_features(plugins):
    disco, caps = plugins
    before = caps.ver
    assert {"http://jabber.org/protocol/caps",
            "urn:xmpp:microblog:0+notify"} <= set(disco.own_features())
    disco.add_feature("urn:example:new")
    assert caps.ver != before


def test_the_node_of_the_hash_is_answered_like_the_profile(plugins, stream):
    disco, caps = plugins
    for node, kind in ((f"https://libervia.org#{caps.ver}", "result"),
                       ("https://libervia.org#old", "error")):
        stream.receive(f"<iq xmlns='jabber:client' type='get' id='c' to='{BOUND.full()}' "
                       f"from='bob@example.org/x'><query xmlns='{NS_DISCO_INFO}' "
                       f"node='{node}'/></iq>")
        answer = stream.output[-1]
        assert answer["type"] == kind
    answered = parse_xml(stream.output[-2].toXml()).query
    assert answered["node"] == f"https://libervia.org#{caps.ver}"
    assert caps_hash(answered) == caps.ver


# contacts' capabilities


BOB = JID("bob@example.org/psi")


def caps_presence(sender: JID = BOB, ver: str = SIMPLE_VER, algo: str = "sha-1",
                  node: str = "http://exodus.jabberstudio.org", type_: str | None = None
                  ) -> str:
    type_attr = f" type='{type_}'" if type_ else ""
    return (f"<presence xmlns='jabber:client' from='{sender.full()}'{type_attr}>"
            f"<c xmlns='{NS_CAPS}' hash='{algo}' node='{node}' ver='{ver}'/></presence>")


@pytest_twisted.ensureDeferred
async def test_a_verified_hash_is_asked_once_and_kept_across_restarts(host, plugins,
                                                                     stream, storage):
    disco, caps = plugins
    stream.answers.append(iq_result(SIMPLE))
    stream.receive(caps_presence())
    await caps.wait_idle()
    asked = stream.sent[0]
    assert (asked["to"], asked.query["node"]) == (
        BOB.full(), f"http://exodus.jabberstudio.org#{SIMPLE_VER}")
    info = await disco.get_info(stream, BOB)
    assert "http://jabber.org/protocol/muc" in info.features
    assert await storage.caps.get_caps("sha-1", SIMPLE_VER) is not None
    # another contact with the same software: nothing asked
    stream.receive(caps_presence(JID("carol@example.org/exodus")))
    await caps.wait_idle()
    assert len(stream.sent) == 1
    assert disco.cached_info(stream, JID("carol@example.org/exodus")) == info
    # a new backend on the same database: nothing asked either
    again = DiscoHost(storage=storage, plugin_infos=[PLUGIN_INFO])
    disco2 = again.plugins["XEP-0030"] = XEP_0030(again)
    caps2 = XEP_0115(again)
    stream2 = StreamClient(again)
    stream2.attach(caps2.get_handler(stream2))
    stream2.receive(caps_presence())
    await caps2.wait_idle()
    assert stream2.sent == []
    assert (await disco2.get_info(stream2, BOB)).features == info.features


@pytest_twisted.ensureDeferred
async def test_an_answer_not_matching_its_hash_is_not_kept_under_it(host, plugins,
                                                                   stream, storage,
                                                                   log_lines):
    disco, caps = plugins
    lying = SIMPLE.replace("muc", "evil")
    stream.answers.append(iq_result(lying))
    stream.receive(caps_presence())
    await caps.wait_idle()
    assert await storage.caps.get_caps("sha-1", SIMPLE_VER) is None
    assert caps.caps_info(("sha-1", SIMPLE_VER)) is None
    assert any("not kept under that hash" in line for line in log_lines())
    # what it said holds for itself only, for a while
    assert "http://jabber.org/protocol/evil" in (await disco.get_info(stream, BOB)).features
    host.reactor.advance(4000)
    assert disco.cached_info(stream, BOB) is None
    # the same hash from someone else is not asked again, nor trusted
    stream.receive(caps_presence(JID("carol@example.org/x")))
    await caps.wait_idle()
    assert len(stream.sent) == 1
    assert disco.cached_info(stream, JID("carol@example.org/x")) is None


@pytest_twisted.ensureDeferred
async def test_hashes_of_other_functions_are_verified_with_them(plugins, stream, storage):
    __, caps = plugins
    ver = caps_hash(parse_xml(SIMPLE), "sha-256")
    stream.answers.append(iq_result(SIMPLE))
    stream.receive(caps_presence(ver=ver, algo="sha-256"))
    await caps.wait_idle()
    assert await storage.caps.get_caps("sha-256", ver) is not None


@pytest_twisted.ensureDeferred
async def test_an_answer_never_coming_is_given_up_and_asked_again_later(host, plugins,
                                                                       stream, storage):
    disco, caps = plugins
    stream.receive(caps_presence())
    await stream.requests_sent(1)
    host.reactor.advance(RESOLVE_TIMEOUT)
    await caps.wait_idle()
    assert await storage.caps.get_caps("sha-1", SIMPLE_VER) is None
    assert disco.cached_info(stream, BOB) is None
    stream.answers.append(iq_result(SIMPLE))
    stream.receive(caps_presence(JID("bob@example.org/other")))
    await caps.wait_idle()
    assert await storage.caps.get_caps("sha-1", SIMPLE_VER) is not None


@pytest_twisted.ensureDeferred
async def test_a_huge_answer_is_not_kept(plugins, stream, storage):
    __, caps = plugins
    features = "".join(f"<feature var='urn:f{n}'/>" for n in range(5000))
    huge = f"<query xmlns='{NS_DISCO_INFO}'>{features}</query>"
    ver = caps_hash(parse_xml(huge))
    stream.answers.append(iq_result(huge))
    stream.receive(caps_presence(ver=ver))
    await caps.wait_idle()
    assert await storage.caps.get_caps("sha-1", ver) is None


@pytest_twisted.ensureDeferred
async def test_new_capabilities_replace_the_old_and_leaving_forgets_them(plugins,
                                                                        stream):
    disco, caps = plugins
    stream.answers += [iq_result(SIMPLE), iq_result(COMPLEX)]
    stream.receive(caps_presence())
    await caps.wait_idle()
    assert caps.entity_caps(stream, BOB) == ("sha-1", SIMPLE_VER)
    stream.receive(caps_presence(ver=COMPLEX_VER, node="http://psi-im.org"))
    await caps.wait_idle()
    info = disco.cached_info(stream, BOB)
    assert [i.name for i in info.identities] == ["Psi 0.11", "\u03a8 0.11"]
    stream.receive(f"<presence xmlns='jabber:client' from='{BOB.full()}' "
                   "type='unavailable'/>")
    assert disco.cached_info(stream, BOB) is None
    assert caps.entity_caps(stream, BOB) is None


@pytest_twisted.ensureDeferred
async def test_two_contacts_announcing_a_new_hash_at_once_cause_one_request(plugins,
                                                                           stream):
    disco, caps = plugins
    stream.receive(caps_presence())
    stream.receive(caps_presence(JID("carol@example.org/exodus")))
    await stream.requests_sent(1)
    assert len(stream.sent) == 1
    stream.waiting[0].callback(parse_xml(iq_result(SIMPLE)))
    await caps.wait_idle()
    assert disco.cached_info(stream, BOB) == disco.cached_info(
        stream, JID("carol@example.org/exodus")) != None  # noqa: E711


@pytest.mark.parametrize("presence", [
    caps_presence(algo="md5"),
    caps_presence(ver="x" * 300),
    caps_presence(node="n" * 2000),
    f"<presence xmlns='jabber:client' from='{BOB.full()}'>"
    f"<c xmlns='{NS_CAPS}' node='http://legacy' ver='1.0' ext='a b'/></presence>",
    f"<presence xmlns='jabber:client'><c xmlns='{NS_CAPS}' hash='sha-1' node='n' "
    f"ver='{SIMPLE_VER}'/></presence>",
    f"<presence xmlns='jabber:client' from='@@bad' ><c xmlns='{NS_CAPS}' hash='sha-1' "
    f"node='n' ver='{SIMPLE_VER}'/></presence>",
    caps_presence(type_="subscribe"),
])
@pytest_twisted.ensureDeferred
async def test_capabilities_that_cannot_be_trusted_are_ignored(plugins, stream,
                                                              presence):
    __, caps = plugins
    stream.receive(presence)
    await caps.wait_idle()
    assert stream.sent == []


@pytest_twisted.ensureDeferred
async def test_our_own_hash_is_known_without_asking(plugins, stream):
    disco, caps = plugins
    stream.receive(caps_presence(BOUND, ver=caps.ver, node="https://libervia.org"))
    await caps.wait_idle()
    assert stream.sent == []
    assert disco.cached_info(stream, BOUND) == disco.own_info()


def test_own_info_round_trips_through_its_element(plugins):
    disco, __ = plugins
    assert DiscoInfo.from_element(disco.own_info().to_element()) == disco.own_info()


# the own hash changing while profiles are connected


class PresenceHost(PresenceEnvHost):
    """The backend with the disco, caps and presence plugins."""

    def __init__(self, storage):
        super().__init__(storage)
        self.config = Config.from_dict({}, env={})
        self.plugin_manager = LoadedPlugins([PLUGIN_INFO])
        self.disco = self.plugins["XEP-0030"] = XEP_0030(self)
        self.caps = self.plugins["XEP-0115"] = XEP_0115(self)
        self.presence = self.plugins["PRESENCE"] = Presence(self)


async def presence_up(host, name="alice"):
    """A profile's stream up, its initial presence sent (read from the storage before:
    it goes out while the stream is initialized)."""
    client = PresenceStreamClient(name)
    client.add(host.presence.get_handler(client))
    client.add(host.disco.get_handler(client))
    host.clients.clients[name] = client
    await host.presence.profile_connecting(client)
    client.start_stream()
    return client


def announced_vers(client):
    return [p.c["ver"] for p in client.output
            if p.name == "presence" and p.getAttribute("type") is None]


@pytest_twisted.ensureDeferred
async def test_a_feature_added_while_connected_sends_the_presence_with_the_new_hash(
        storage):
    host = PresenceHost(storage)
    client = await presence_up(host)
    first = host.caps.ver
    assert announced_vers(client) == [first]
    host.disco.add_notify("urn:example:late")
    second = host.caps.ver
    assert second != first
    assert second == caps_hash(host.disco.own_info().to_element())
    assert "urn:example:late+notify" in host.disco.own_features()
    assert announced_vers(client) == [first, second]
    # a contact asking what the new hash stands for gets the new features
    client.receive(f"<iq xmlns='jabber:client' type='get' id='q' from='bob@example.org/x'>"
                   f"<query xmlns='{NS_DISCO_INFO}' node='https://libervia.org#{second}'/>"
                   "</iq>")
    answer = parse_xml(client.output[-1].toXml())
    assert (answer["type"], answer["id"]) == ("result", "q")
    assert caps_hash(answer.query) == second
    # the same feature again changes nothing: no presence
    host.disco.add_feature("urn:example:late+notify")
    assert announced_vers(client) == [first, second]


@pytest_twisted.ensureDeferred
async def test_profiles_whose_initial_presence_is_still_to_come_send_nothing_yet(
        storage):
    host = PresenceHost(storage)
    up = await presence_up(host, "alice")
    waiting = PresenceStreamClient("bob")
    waiting.add(host.presence.get_handler(waiting))
    host.clients.clients["bob"] = waiting
    await host.presence.profile_connecting(waiting)
    gate = defer.Deferred()
    host.trigger.add(TRIGGER_INITIAL, lambda client: gate if client is waiting else True)
    waiting.start_stream()  # its initial presence waits for the gate
    host.disco.add_feature("urn:example:new")
    assert len(announced_vers(up)) == 2
    assert waiting.output == []
    gate.callback(True)
    # its first presence carries the new hash
    assert announced_vers(waiting)[-1] == host.caps.ver == announced_vers(up)[-1]


@pytest_twisted.ensureDeferred
async def test_a_feature_added_before_any_presence_sends_nothing(storage):
    host = PresenceHost(storage)
    before = host.caps.ver
    host.disco.add_feature("urn:example:early")
    assert host.caps.ver != before
    client = await presence_up(host)
    assert announced_vers(client) == [host.caps.ver]


def test_a_failing_features_listener_does_not_stop_the_others(plugins):
    disco, __ = plugins
    told = []

    def broken():
        raise RuntimeError("a plugin's bug")

    disco.add_features_listener(broken)
    disco.add_features_listener(lambda: told.append(disco.own_features()))
    disco.add_feature("urn:example:x")
    assert "urn:example:x" in told[0]
