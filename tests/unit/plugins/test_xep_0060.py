"""XEP-0060 client: requests as sent, answers as parsed, events as dispatched."""

from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber.jid import JID
from wokkel.test.helpers import XmlStreamStub

from libervia.backend.bridge.server import Bridge
from libervia.backend.core.config import Config
from libervia.backend.core.triggers import TriggerManager
from libervia.backend.core.xml_tools import parse_xml
from libervia.backend.plugins.plugin_xep_0030 import XEP_0030
from libervia.backend.plugins.plugin_xep_0059 import XEP_0059, RSMRequest
from libervia.backend.plugins.xep_0060 import (
    NS_PUBSUB,
    XEP_0060,
    InvalidRequest,
    ItemNotFound,
    PubsubError,
    PubsubHandler,
    stanzas,
)
from libervia.backend.plugins.xep_0060.stanzas import TextItemsResult
from tests.unit.plugins.iq_stub import StubClient

SERVICE = JID("pubsub.example.org")


class Host:
    def __init__(self):
        self.reactor = task.Clock()
        self.config = Config.from_dict({}, env={})
        self.trigger = TriggerManager()
        self.bridge = Bridge(self)
        self.plugins = {"XEP-0030": XEP_0030(self), "XEP-0059": XEP_0059(self)}


@pytest.fixture
def host():
    return Host()


@pytest.fixture
def plugin(host):
    return XEP_0060(host)


@pytest.fixture
def client():
    return StubClient()


ITEMS_ANSWER = (
    "<iq xmlns='jabber:client' type='result' from='pubsub.example.org'>"
    "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='blog'>"
    "<item id='i2' publisher='bob@example.org'><entry xmlns='http://www.w3.org/2005/Atom'>"
    "<title>Two</title></entry></item>"
    "<item id='i1'><entry xmlns='http://www.w3.org/2005/Atom'><title>One</title></entry>"
    "</item></items>"
    "<set xmlns='http://jabber.org/protocol/rsm'><first index='0'>i2</first>"
    "<last>i1</last><count>40</count></set></pubsub></iq>"
)


@pytest_twisted.ensureDeferred
async def test_get_items_request_and_answer(plugin, client):
    client.answers.append(ITEMS_ANSWER)
    result = await plugin.get_items(
        client, "pubsub.example.org", "blog", max_items=2, item_ids=None,
        rsm_request=RSMRequest(max=2, before=""), order_by="creation",
    )
    sent = client.sent[0]
    assert sent["type"] == "get" and sent["to"] == "pubsub.example.org"
    pubsub = sent.pubsub
    assert pubsub.uri == NS_PUBSUB
    assert pubsub.items["node"] == "blog" and pubsub.items["max_items"] == "2"
    rsm_set = next(pubsub.elements("http://jabber.org/protocol/rsm", "set"))
    assert str(next(rsm_set.elements("http://jabber.org/protocol/rsm", "max"))) == "2"
    assert next(pubsub.elements("urn:xmpp:order-by:1", "order"))["field"] == "creation"
    assert [i["id"] for i in result.items] == ["i2", "i1"]
    # items are kept exactly as received
    assert result.items[0].getAttribute("publisher") == "bob@example.org"
    assert "<title>Two</title>" in result.items[0].toXml()
    assert result.rsm == {"first": "i2", "last": "i1", "index": 0, "count": 40}
    assert result.cached is False
    serialised = result.serialise()
    assert serialised["metadata"]["rsm"]["count"] == 40
    assert parse_xml(serialised["items"][1])["id"] == "i1"


@pytest_twisted.ensureDeferred
async def test_get_items_by_ids_and_pep_default(plugin, client):
    client.answers.append("<iq type='result'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                          "<items node='n'/></pubsub></iq>")
    result = await plugin.get_items(client, None, "n", item_ids=["a", "b"])
    sent = client.sent[0]
    assert sent["to"] == "alice@example.org"  # PEP: the profile's own account
    assert [i["id"] for i in sent.pubsub.items.elements(NS_PUBSUB, "item")] == ["a", "b"]
    assert result.items == [] and result.rsm == {}


@pytest_twisted.ensureDeferred
async def test_get_items_return_point_answers_in_place_of_the_service(plugin, client, host):
    seen = []

    async def cache(client_, query):
        seen.append((query.service.full(), query.node, query.max_items, query.use_cache))
        if query.use_cache:
            return False, "from cache"
        return True, None

    host.trigger.add("XEP-0060_get_items", cache)
    assert await plugin.get_items(client, SERVICE, "blog", max_items=5) == "from cache"
    assert client.sent == []
    client.answers.append(ITEMS_ANSWER)
    result = await plugin.get_items(client, SERVICE, "blog", use_cache=False)
    assert len(result.items) == 2
    assert seen == [("pubsub.example.org", "blog", 5, True),
                    ("pubsub.example.org", "blog", None, False)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"node": ""}, "node name"), ({"max_items": -1}, "max_items"),
     ({"order_by": "random"}, "order_by"), ({"service": "a@b@c"}, "service JID")],
)
@pytest_twisted.ensureDeferred
async def test_invalid_requests_fail_before_sending(plugin, client, kwargs, message):
    args = {"service": SERVICE, "node": "blog"} | kwargs
    with pytest.raises(InvalidRequest, match=message):
        await plugin.get_items(client, **args)
    assert client.sent == []


@pytest_twisted.ensureDeferred
async def test_stanza_errors_become_pubsub_errors(plugin, client):
    client.answers.append(jabber_error.StanzaError("item-not-found", text="no such node"))
    with pytest.raises(ItemNotFound, match="node 'blog' on pubsub.example.org not found"):
        await plugin.get_items(client, SERVICE, "blog")
    client.answers.append(jabber_error.StanzaError("forbidden"))
    with pytest.raises(PubsubError, match="forbidden") as info:
        await plugin.purge_node(client, SERVICE, "blog")
    assert info.value.condition == "forbidden"


@pytest_twisted.ensureDeferred
async def test_publish_with_options_returns_ids(plugin, client, host):
    client.answers.append(
        "<iq type='result'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
        "<publish node='blog'><item id='generated'/></publish></pubsub></iq>")
    item = parse_xml("<item xmlns='http://jabber.org/protocol/pubsub'><entry "
                     "xmlns='http://www.w3.org/2005/Atom'><title>T</title></entry></item>")
    ids = await plugin.publish(client, SERVICE, "blog", [item],
                               options={"pubsub#max_items": "max"})
    assert ids == ["generated"]
    sent = client.sent[0]
    assert sent["type"] == "set"
    assert sent.pubsub.publish["node"] == "blog"
    options = next(sent.pubsub.elements(NS_PUBSUB, "publish-options"))
    fields = {f["var"]: str(f.value) for f in options.x.elements() if f.name == "field"}
    assert fields["FORM_TYPE"] == "http://jabber.org/protocol/pubsub#publish-options"
    assert fields["pubsub#max_items"] == "max"


@pytest_twisted.ensureDeferred
async def test_publish_trigger_can_cancel(plugin, client, host):
    host.trigger.add("XEP-0060_publish", lambda *args: False)
    assert await plugin.publish(client, SERVICE, "blog", []) == []
    assert client.sent == []


@pytest_twisted.ensureDeferred
async def test_owner_requests(plugin, client):
    client.answers += ["<iq type='result'/>"] * 3 + [
        "<iq type='result'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>"
        "<configure node='blog'><x xmlns='jabber:x:data' type='form'>"
        "<field var='FORM_TYPE' type='hidden'><value>"
        "http://jabber.org/protocol/pubsub#node_config</value></field>"
        "<field var='pubsub#max_items' type='text-single'><value>10</value></field>"
        "</x></configure></pubsub></iq>"
    ]
    await plugin.retract_items(client, SERVICE, "blog", ["a", "b"])
    await plugin.purge_node(client, SERVICE, "blog")
    await plugin.delete_node(client, SERVICE, "blog")
    config = await plugin.get_node_configuration(client, SERVICE, "blog")
    retract, purge, delete, configure = client.sent
    assert [i["id"] for i in retract.pubsub.retract.elements(NS_PUBSUB, "item")] == ["a", "b"]
    assert retract.pubsub.retract["notify"] == "true"
    assert purge.pubsub.uri.endswith("#owner") and purge.pubsub.purge["node"] == "blog"
    assert delete.pubsub.delete["node"] == "blog"
    assert configure["type"] == "get"
    assert config == {"pubsub#max_items": "10"}


@pytest_twisted.ensureDeferred
async def test_node_metadata(plugin, client):
    client.answers.append(
        "<iq type='result'><query xmlns='http://jabber.org/protocol/disco#info' node='blog'>"
        "<identity category='pubsub' type='leaf'/>"
        "<feature var='http://jabber.org/protocol/pubsub'/>"
        "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
        "<value>http://jabber.org/protocol/pubsub#meta-data</value></field>"
        "<field var='pubsub#type'><value>urn:xmpp:microblog:0</value></field></x>"
        "</query></iq>")
    metadata = await plugin.get_node_metadata(client, SERVICE, "blog")
    assert metadata["identities"] == [{"category": "pubsub", "type": "leaf"}]
    assert metadata["meta_data"]["pubsub#type"] == "urn:xmpp:microblog:0"


@pytest_twisted.ensureDeferred
async def test_subscribe_and_subscriptions(plugin, client):
    client.answers += [
        "<iq type='result'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
        "<subscription node='blog' jid='alice@example.org' subscription='subscribed' "
        "subid='s1'/></pubsub></iq>",
        "<iq type='result'><pubsub xmlns='http://jabber.org/protocol/pubsub'><subscriptions>"
        "<subscription node='blog' jid='alice@example.org' subscription='subscribed'/>"
        "</subscriptions></pubsub></iq>",
    ]
    assert await plugin.subscribe(client, SERVICE, "blog") == {
        "node": "blog", "state": "subscribed", "subid": "s1"}
    assert client.sent[0].pubsub.subscribe["jid"] == "alice@example.org"
    subs = await plugin.subscriptions(client, SERVICE)
    assert subs == [{"node": "blog", "jid": "alice@example.org", "state": "subscribed",
                     "subid": None}]


EVENT = (
    "<message xmlns='jabber:client' from='pubsub.example.org' to='alice@example.org'>"
    "<event xmlns='http://jabber.org/protocol/pubsub#event'>{}</event></message>"
)


@pytest.mark.parametrize(
    ("payload", "point", "expected"),
    [
        ("<items node='blog'><item id='x'><p xmlns='urn:test'/></item></items>",
         "XEP-0060_items", ["x"]),
        ("<items node='blog'><retract id='x'/><retract id='y'/></items>",
         "XEP-0060_retract", ["x", "y"]),
        ("<purge node='blog'/>", "XEP-0060_purge", None),
        ("<delete node='blog'/>", "XEP-0060_delete", None),
        ("<configuration node='blog'><x xmlns='jabber:x:data' type='result'>"
         "<field var='FORM_TYPE' type='hidden'><value>"
         "http://jabber.org/protocol/pubsub#node_config</value></field>"
         "<field var='pubsub#title'><value>My blog</value></field></x></configuration>",
         "XEP-0060_configuration", {"pubsub#title": "My blog"}),
    ],
)
@pytest_twisted.ensureDeferred
async def test_every_event_kind_reaches_its_trigger(plugin, client, host, payload, point,
                                                     expected):
    calls = []

    def record(client_, event):
        rest = tuple(getattr(event, name) for name in ("items", "item_ids", "options")
                     if hasattr(event, name))
        calls.append((event.service.full(), event.node, rest))
        return True

    for name in ("XEP-0060_items", "XEP-0060_retract", "XEP-0060_purge",
                 "XEP-0060_delete", "XEP-0060_configuration"):
        host.trigger.add(name, lambda *a, name=name: calls.append(name) or record(*a))
    await plugin.dispatch(client, [parse_xml(EVENT.format(payload))])
    assert calls[0] == point
    service, node, rest = calls[1]
    assert (service, node) == ("pubsub.example.org", "blog")
    if point == "XEP-0060_items":
        assert [i["id"] for i in rest[0]] == expected
    elif expected is not None:
        assert rest[0] == expected
    assert len(calls) == 2


@pytest_twisted.ensureDeferred
async def test_event_without_node_is_ignored(plugin, client, host):
    calls = []
    host.trigger.add("XEP-0060_purge", lambda *a: calls.append(a) or True)
    await plugin.dispatch(client, [parse_xml(EVENT.format("<purge/>"))])
    assert calls == []


def test_handler_processes_events_in_order(plugin, client, host):
    """A slow first event is finished before the second one starts."""
    order = []
    gate = defer.Deferred()

    async def slow_items(client_, event):
        items = event.items
        order.append(("start", items[0]["id"]))
        if items[0]["id"] == "first":
            await gate
        order.append(("end", items[0]["id"]))
        return True

    host.trigger.add("XEP-0060_items", slow_items)
    handler = PubsubHandler(plugin.dispatch, client)
    for item_id in ("first", "second"):
        handler._on_event(parse_xml(EVENT.format(
            f"<items node='blog'><item id='{item_id}'/></items>")))
    assert order == [("start", "first")]
    gate.callback(None)
    assert order == [("start", "first"), ("end", "first"), ("start", "second"),
                     ("end", "second")]


def record_events(host, gate_on: str):
    """Record the item and retraction trigger calls; the first holds until ``gate``."""
    calls = []
    gate = defer.Deferred()

    async def items(client_, event):
        calls.append(("items", event.node, [i["id"] for i in event.items]))
        if event.items[0]["id"] == gate_on:
            await gate
        return True

    host.trigger.add("XEP-0060_items", items)
    host.trigger.add("XEP-0060_retract", lambda client_, event:
                     calls.append(("retract", event.node, event.item_ids)) or True)
    return calls, gate


def items_event(node, *ids, sender="pubsub.example.org"):
    items = "".join(f"<item id='{i}'/>" for i in ids)
    return parse_xml(EVENT.format(f"<items node='{node}'>{items}</items>").replace(
        "pubsub.example.org", sender))


def test_new_items_of_a_node_queued_in_a_row_come_in_one_trigger_call(plugin, client,
                                                                       host):
    """A burst of notifications costs the cache one transaction, not one each."""
    calls, gate = record_events(host, gate_on="first")
    handler = PubsubHandler(plugin.dispatch, client)
    handler._on_event(items_event("blog", "first"))
    for item_id in ("a", "b", "c"):
        handler._on_event(items_event("blog", item_id))
    handler._on_event(items_event("blog", "d", "e"))
    assert calls == [("items", "blog", ["first"])]
    gate.callback(None)
    assert calls == [("items", "blog", ["first"]),
                     ("items", "blog", ["a", "b", "c", "d", "e"])]


def test_a_burst_of_items_spans_nodes_and_ends_at_any_other_event_or_repeated_id(
        plugin, client, host):
    """Events keep their order: new items of several nodes (or services) queued in a
    row come as one event per node, each node's items in order; nothing is merged
    across a retraction, or an id notified twice in a node (its first publication
    sets its place)."""
    calls, gate = record_events(host, gate_on="first")
    handler = PubsubHandler(plugin.dispatch, client)
    handler._on_event(items_event("blog", "first"))
    for message in (items_event("blog", "a"), items_event("other", "x"),
                    items_event("blog", "b"),
                    parse_xml(EVENT.format(
                        "<items node='blog'><retract id='a'/></items>")),
                    items_event("blog", "c"), items_event("other", "d"),
                    items_event("other", "e"), items_event("blog", "e"),
                    items_event("other", "f", sender="pubsub.example.net"),
                    items_event("other", "e"), items_event("blog", "g")):
        handler._on_event(message)
    gate.callback(None)
    assert calls == [("items", "blog", ["first"]), ("items", "blog", ["a", "b"]),
                     ("items", "other", ["x"]), ("retract", "blog", ["a"]),
                     ("items", "blog", ["c", "e"]), ("items", "other", ["d", "e"]),
                     ("items", "other", ["f"]), ("items", "other", ["e"]),
                     ("items", "blog", ["g"])]


def test_the_nodes_of_a_burst_are_handled_at_the_same_time_and_the_next_event_waits(
        plugin, client, host):
    """A node whose handling waits (for the database) does not hold the other nodes
    of its burst; the event after the burst waits for all of them."""
    calls = []
    gates = {"first": defer.Deferred(), "a": defer.Deferred()}

    async def items(client_, event):
        calls.append(("start", event.node))
        gate = gates.get(event.items[0]["id"])
        if gate is not None:
            await gate
        calls.append(("end", event.node))
        return True

    host.trigger.add("XEP-0060_items", items)
    host.trigger.add("XEP-0060_purge",
                     lambda client_, event: calls.append(("purge", event.node)) or True)
    handler = PubsubHandler(plugin.dispatch, client)
    for message in (items_event("blog", "first"), items_event("blog", "a"),
                    items_event("other", "x"),
                    parse_xml(EVENT.format("<purge node='other'/>"))):
        handler._on_event(message)
    gates["first"].callback(None)
    assert calls == [("start", "blog"), ("end", "blog"), ("start", "blog"),
                     ("start", "other"), ("end", "other")]
    gates["a"].callback(None)
    assert calls[5:] == [("end", "blog"), ("purge", "other")]


def test_a_node_failing_in_a_burst_does_not_stop_the_others_of_the_burst(
        plugin, client, host):
    seen = []
    gate = defer.Deferred()

    async def items(client_, event):
        seen.append(event.node)
        if event.node == "slow":
            await gate
        if event.node == "broken":
            raise ValueError("handler bug")
        return True

    host.trigger.add("XEP-0060_items", items)
    handler = PubsubHandler(plugin.dispatch, client)
    for node, item_id in (("slow", "s"), ("broken", "a"), ("blog", "b"),
                          ("other", "c")):
        handler._on_event(items_event(node, item_id))
    gate.callback(None)
    assert seen == ["slow", "broken", "blog", "other"]
    handler._on_event(items_event("blog", "after"))
    assert seen[-1] == "blog"


def test_a_long_backlog_holds_the_reading_until_half_of_it_is_handled(plugin, client,
                                                                     host):
    """A server notifying faster than the backend handles fills its own queue: the
    backend's memory holds at most MAX_BACKLOG waiting notifications."""
    from libervia.backend.plugins.xep_0060.events import MAX_BACKLOG

    holds = []
    client.hold_reading = holds.append
    calls, gate = record_events(host, gate_on="first")
    handler = PubsubHandler(plugin.dispatch, client)
    handler._on_event(items_event("blog", "first"))
    for n in range(MAX_BACKLOG - 1):
        handler._on_event(items_event("blog", f"i{n}"))
    assert holds == []
    handler._on_event(items_event("blog", "last"))
    handler._on_event(items_event("blog", "read before the hold took effect"))
    assert holds == [True]
    gate.callback(None)
    assert holds == [True, False]
    assert sum(len(ids) for __, __, ids in calls) == MAX_BACKLOG + 2


def test_an_event_failing_does_not_stop_the_following_ones(plugin, client, host):
    seen = []

    def items(client_, event):
        seen.append(event.node)
        if event.node == "broken":
            raise ValueError("handler bug")
        return True

    host.trigger.add("XEP-0060_items", items)
    handler = PubsubHandler(plugin.dispatch, client)
    handler._on_event(items_event("broken", "a"))
    handler._on_event(items_event("blog", "b"))
    assert seen == ["broken", "blog"]


def test_handler_dispatches_events_from_the_stream_and_leaves_presence_alone(
        plugin, client, host):
    """The initial presence that makes servers deliver the notifications is the
    presence plugin's (a dependency of XEP-0060): the handler sends nothing."""
    stub = XmlStreamStub()
    handler = PubsubHandler(plugin.dispatch, client)
    handler.parent = SimpleNamespace(send=stub.xmlstream.send)
    handler.makeConnection(stub.xmlstream)
    handler.connectionInitialized()
    assert stub.output == []
    purged = []
    host.trigger.add("XEP-0060_purge", lambda client_, event:
                     purged.append((event.service.full(), event.node)) or True)
    stub.send(parse_xml(EVENT.format("<purge node='blog'/>")))
    assert purged == [("pubsub.example.org", "blog")]


BAD_TEXTS = ["", "a\x01b", "lone \ud800 surrogate", "\ufffe", "x" * 1025]


@pytest.mark.parametrize("bad", BAD_TEXTS + [1.5, True, None, ["i"]])
@pytest_twisted.ensureDeferred
async def test_an_item_id_a_stanza_cant_carry_is_refused_before_sending(plugin, client,
                                                                        bad):
    """A control character sent in a stanza makes the server close the stream."""
    with pytest.raises(InvalidRequest, match="item id"):
        await plugin.retract_items(client, SERVICE, "blog", ["ok", bad])
    with pytest.raises(InvalidRequest, match="item id"):
        await plugin.get_items(client, SERVICE, "blog", item_ids=["ok", bad])
    assert client.sent == []


@pytest.mark.parametrize("item_ids", [1.5, True, "i1", {"i1": 1}])
@pytest_twisted.ensureDeferred
async def test_item_ids_must_be_a_list(plugin, client, item_ids):
    with pytest.raises(InvalidRequest, match="list"):
        await plugin.retract_items(client, SERVICE, "blog", item_ids)
    with pytest.raises(InvalidRequest, match="list"):
        await plugin.get_items(client, SERVICE, "blog", item_ids=item_ids)
    assert client.sent == []


@pytest.mark.parametrize(("options", "message"), [
    ({"pubsub#title": "a\x00b"}, "pubsub#title"),
    ({"pubsub#title": "\udfff"}, "pubsub#title"),
    ({"bad\x07name": "x"}, "option name"),
    ({"": "x"}, "option name"),
    ({"pubsub#max_items": {"nested": 1}}, "pubsub#max_items"),
    ({"pubsub#roster_groups_allowed": ["ok", None]}, "roster_groups_allowed"),
    ([("pubsub#title", "x")], "object"),
])
@pytest_twisted.ensureDeferred
async def test_options_a_form_cant_carry_are_refused_before_sending(plugin, client,
                                                                    options, message):
    for call in (lambda: plugin.create_node(client, SERVICE, "blog", options),
                 lambda: plugin.configure_node(client, SERVICE, "blog", options),
                 lambda: plugin.subscribe(client, SERVICE, "blog", options),
                 lambda: plugin.publish(client, SERVICE, "blog",
                                        [parse_xml("<item id='i'/>")], options)):
        with pytest.raises(InvalidRequest, match=message):
            await call()
    assert client.sent == []


@pytest_twisted.ensureDeferred
async def test_a_subscription_id_a_stanza_cant_carry_is_refused(plugin, client):
    with pytest.raises(InvalidRequest, match="subscription id"):
        await plugin.unsubscribe(client, SERVICE, "blog", subid="s\x1b1")
    assert client.sent == []


@pytest_twisted.ensureDeferred
async def test_accepted_options_are_sent_as_their_text(plugin, client):
    client.answers.append("<iq type='result'/>")
    await plugin.configure_node(client, SERVICE, "blog", {
        "pubsub#max_items": 10, "pubsub#persist_items": True,
        "pubsub#roster_groups_allowed": ["friends", 2], "pubsub#title": ""})
    form = client.sent[0].pubsub.configure.x
    values = {f["var"]: [str(v) for v in f.elements() if v.name == "value"]
              for f in form.elements() if f.name == "field"}
    assert values["pubsub#max_items"] == ["10"]
    assert values["pubsub#persist_items"] == ["true"]
    assert values["pubsub#roster_groups_allowed"] == ["friends", "2"]


@pytest.mark.parametrize("cursor", ["a\x02", "\ud800"])
@pytest_twisted.ensureDeferred
async def test_an_rsm_cursor_a_stanza_cant_carry_is_refused(plugin, client, cursor):
    for rsm in (RSMRequest(max=5, after=cursor), RSMRequest(max=5, before=cursor)):
        with pytest.raises(InvalidRequest, match="RSM cursor"):
            await plugin.get_items(client, SERVICE, "blog", rsm_request=rsm)
    assert client.sent == []


def test_an_answer_held_as_text_is_forwarded_unparsed_and_parsed_when_read(monkeypatch):
    texts = ["<item xmlns='http://jabber.org/protocol/pubsub' id='a'><p>1 &amp; 2</p></item>",
             "<item xmlns='http://jabber.org/protocol/pubsub' id='b'/>"]
    result = TextItemsResult("pubsub.example.org", "blog", list(texts), cached=True)
    parsed = []
    monkeypatch.setattr(stanzas, "parse_xml",
                        lambda text: parsed.append(text) or parse_xml(text))
    assert result.serialise()["items"] == texts
    assert parsed == [], "the texts were parsed to be forwarded"
    assert [i["id"] for i in result.items] == ["a", "b"] and parsed == texts
    # once read, the elements are the answer, changes included
    result.items.pop()
    assert result.serialise()["items"] == texts[:1]
    assert result.serialise()["metadata"]["cached"] is True


def test_an_answer_held_as_text_leaves_out_what_is_not_xml_when_read():
    result = TextItemsResult("pubsub.example.org", "blog", ["<item id='a'/>", "<item"])
    assert [i["id"] for i in result.items] == ["a"]
    result.items = []
    assert result.serialise()["items"] == []


# events as bridge signals (pubsub_event)


class SubscribedBridge(Bridge):
    """A bridge with a frontend subscribed to every signal, recording them."""

    def __init__(self, host):
        super().__init__(host)
        self.emitted = []

    def is_wanted(self, name):
        return True

    def emit_signal(self, name, **data):
        self.emitted.append((name, data))
        return 1


@pytest.fixture
def signalling_host(host):
    host.bridge = SubscribedBridge(host)
    return host


@pytest.fixture
def profile_client(client):
    client.profile = SimpleNamespace(name="alice")
    return client


@pytest.mark.parametrize(("payload", "expected"), [
    ("<items node='blog'><item id='x'><p xmlns='urn:test'>hi</p></item></items>",
     {"type": "items", "item_ids": ["x"],
      "items": ["<item xmlns='http://jabber.org/protocol/pubsub' id='x'>"
                "<p xmlns='urn:test'>hi</p></item>"]}),
    ("<items node='blog'><retract id='x'/><retract id='y'/></items>",
     {"type": "retract", "item_ids": ["x", "y"]}),
    ("<purge node='blog'/>", {"type": "purge"}),
    ("<delete node='blog'/>", {"type": "delete"}),
    ("<configuration node='blog'><x xmlns='jabber:x:data' type='result'>"
     "<field var='FORM_TYPE' type='hidden'><value>"
     "http://jabber.org/protocol/pubsub#node_config</value></field>"
     "<field var='pubsub#title'><value>My blog</value></field></x></configuration>",
     {"type": "configuration", "options": {"pubsub#title": "My blog"}}),
    ("<configuration node='blog'/>", {"type": "configuration", "options": None}),
])
@pytest_twisted.ensureDeferred
async def test_every_event_reaches_the_frontends_as_a_signal(
    signalling_host, profile_client, payload, expected
):
    plugin = XEP_0060(signalling_host)
    assert "pubsub_event" in signalling_host.bridge.signals
    await plugin.dispatch(profile_client, [parse_xml(EVENT.format(payload))])
    assert signalling_host.bridge.emitted == [("pubsub_event", {
        "profile": "alice", "service": "pubsub.example.org", "node": "blog", **expected})]


@pytest_twisted.ensureDeferred
async def test_signal_comes_after_the_triggers_even_when_one_fails(
    signalling_host, profile_client
):
    plugin = XEP_0060(signalling_host)
    seen = []

    def failing(client_, event):
        seen.append(list(signalling_host.bridge.emitted))
        raise RuntimeError("a plugin's bug")

    signalling_host.trigger.add("XEP-0060_purge", failing)
    with pytest.raises(RuntimeError):
        await plugin.dispatch(profile_client, [parse_xml(EVENT.format(
            "<purge node='blog'/>"))])
    assert seen == [[]]  # not yet when the trigger ran
    assert [d["type"] for __, d in signalling_host.bridge.emitted] == ["purge"]


@pytest_twisted.ensureDeferred
async def test_a_burst_is_one_signal_and_the_items_stay_as_received(
    signalling_host, profile_client
):
    plugin = XEP_0060(signalling_host)
    kept = []
    signalling_host.trigger.add("XEP-0060_items", lambda c, event: kept.append(event))
    messages = [parse_xml(EVENT.format(f"<items node='blog'><item id='{i}'><p "
                                       f"xmlns='urn:test'>{i}</p></item></items>"))
                for i in ("a", "b")]
    await plugin.dispatch(profile_client, messages)
    [(__, data)] = signalling_host.bridge.emitted
    assert data["item_ids"] == ["a", "b"] and len(data["items"]) == 2
    # the event's own items are untouched: other plugins may hold them
    [event] = kept
    for item in event.items:
        assert item.uri == "http://jabber.org/protocol/pubsub#event"
        assert next(item.elements()).parent is item


@pytest_twisted.ensureDeferred
async def test_an_item_too_deep_to_write_is_left_out_with_a_log_line(
    signalling_host, profile_client
):
    from twisted.logger import formatEvent, globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    plugin = XEP_0060(signalling_host)
    message = parse_xml(EVENT.format("<items node='blog'><item id='ok'/><item id='deep'/>"
                                     "</items>"))
    deep = next(e for e in message.event.items.elements() if e["id"] == "deep")
    element = deep
    for __ in range(5000):
        element = element.addElement("d")
    await plugin.dispatch(profile_client, [message])
    [(__, data)] = signalling_host.bridge.emitted
    assert data["item_ids"] == ["ok", "deep"]
    assert data["items"] == ["<item xmlns='http://jabber.org/protocol/pubsub' id='ok'/>"]
    globalLogPublisher.removeObserver(events.append)
    assert any("nested too deeply" in formatEvent(e) for e in events)


@pytest_twisted.ensureDeferred
async def test_no_signal_is_built_when_no_frontend_listens(host, profile_client):
    plugin = XEP_0060(host)
    calls = []
    host.bridge.emit_signal = lambda *a, **k: calls.append(a)
    await plugin.dispatch(profile_client, [parse_xml(EVENT.format(
        "<items node='blog'><item id='x'/></items>"))])
    assert calls == []


# the nodes of a service (pubsub_node_list)


@pytest_twisted.ensureDeferred
async def test_node_list_is_the_services_disco_items_with_a_node(plugin, client):
    client.answers.append(
        "<iq xmlns='jabber:client' type='result' from='pubsub.example.org'>"
        "<query xmlns='http://jabber.org/protocol/disco#items'>"
        "<item jid='pubsub.example.org' node='news' name='The news'/>"
        "<item jid='pubsub.example.org' node='blog'/>"
        "<item jid='other.example.org'/>"
        "<item jid='not a@valid@jid' node='odd'/>"
        "</query></iq>")
    nodes = await plugin.list_nodes(client, "pubsub.example.org")
    sent = client.sent[0]
    assert sent["to"] == "pubsub.example.org" and sent["type"] == "get"
    assert sent.query.uri == "http://jabber.org/protocol/disco#items"
    assert not sent.query.hasAttribute("node")
    assert nodes == [
        {"node": "news", "name": "The news", "jid": "pubsub.example.org"},
        {"node": "blog", "name": None, "jid": "pubsub.example.org"},
        {"node": "odd", "name": None, "jid": None},
    ]


@pytest_twisted.ensureDeferred
async def test_node_list_of_pep_asks_the_account(plugin, client):
    client.answers.append("<iq xmlns='jabber:client' type='result'/>")
    assert await plugin.list_nodes(client, None) == []
    assert client.sent[0]["to"] == "alice@example.org"


@pytest.mark.parametrize(("answer", "error", "message"), [
    (jabber_error.StanzaError("item-not-found"), ItemNotFound, "not found"),
    (jabber_error.StanzaError("forbidden"), PubsubError, "forbidden"),
    (defer.TimeoutError(), PubsubError, "did not answer within"),
])
@pytest_twisted.ensureDeferred
async def test_node_list_errors_are_typed(plugin, client, answer, error, message):
    client.answers.append(answer)
    with pytest.raises(error, match=message):
        await plugin.list_nodes(client, "pubsub.example.org")


@pytest_twisted.ensureDeferred
async def test_node_list_refuses_an_invalid_service(plugin, client):
    with pytest.raises(InvalidRequest):
        await plugin.list_nodes(client, "not a@valid@jid")
    assert client.sent == []
