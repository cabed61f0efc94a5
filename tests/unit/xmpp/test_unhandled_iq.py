"""IQ requests no handler takes are answered ``service-unavailable`` (RFC 6120 §8.4),
once, and only those.

The client is the real one, its stream on an in-memory transport (as in
``test_stream_robustness``); the handlers are the service discovery plugin's and small
ones claiming requests as plugins do (``iq.handled``), answering at once or later.
"""

import pytest
from twisted.logger import formatEvent, globalLogPublisher
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish
from wokkel.subprotocols import XMPPHandler

from libervia.backend.core.xml_tools import parse_xml
from libervia.backend.plugins.plugin_xep_0030 import NS_DISCO_INFO, XEP_0030
from tests.unit.plugins.disco_env import DiscoHost
from tests.unit.xmpp.test_stream_robustness import stream_up
from tests.unit.xmpp.test_xmpp_client import make_client

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TEST = "urn:example:test"


def written(transport):
    """The stanzas the client wrote, parsed (and the transport emptied)."""
    data = transport.value().decode("utf-8")
    transport.clear()
    if not data:
        return []
    return list(parse_xml(f"<all xmlns='jabber:client'>{data}</all>").elements())


def iq(type_, payload_ns=NS_TEST, stanza_id="q1", sender="stranger@example.net/x",
       payload="<query xmlns='{ns}'/>", to="alice@example.org/res"):
    content = payload.format(ns=payload_ns) if payload_ns else ""
    return parse_xml(f"<iq xmlns='jabber:client' type='{type_}' id='{stanza_id}' "
                     f"from='{sender}' to='{to}'>{content}</iq>")


def condition(stanza):
    error = next(c for c in stanza.elements() if c.name == "error")
    return [c.name for c in error.elements() if c.uri == NS_STANZAS]


class Claiming(XMPPHandler):
    """A plugin's handler of ``NS_TEST`` requests: claims them, answers now or when
    :meth:`answer_later` is called."""

    def __init__(self, at_once):
        super().__init__()
        self.at_once = at_once
        self.waiting = []

    def connectionInitialized(self):  # noqa: N802 (Wokkel API)
        self.xmlstream.addObserver(f'/iq/query[@xmlns="{NS_TEST}"]', self.on_request)

    def on_request(self, request):
        if request.getAttribute("type") not in ("get", "set"):
            return
        request.handled = True
        if self.at_once:
            self.send(xmlstream.toResponse(request, "result"))
        else:
            self.waiting.append(request)

    def answer_later(self):
        for request in self.waiting:
            self.send(xmlstream.toResponse(request, "result"))


@pytest.fixture
def connected():
    client, __, __ = make_client()
    client.connect()
    xs, transport = stream_up(client)
    return client, xs, transport


@pytest.mark.parametrize("type_", ["get", "set"])
def test_a_request_nobody_handles_is_answered_service_unavailable(connected, type_):
    __, xs, transport = connected
    xs.dispatch(iq(type_, payload="<query xmlns='{ns}'>" + "x" * 5000 + "</query>"))
    [answer] = written(transport)
    assert (answer.name, answer["type"], answer["id"]) == ("iq", "error", "q1")
    assert (answer["to"], answer["from"]) == ("stranger@example.net/x",
                                              "alice@example.org/res")
    assert condition(answer) == ["service-unavailable"]
    # the request's payload is not echoed back
    assert [c.name for c in answer.elements()] == ["error"]


def test_a_request_without_payload_is_answered_too(connected):
    __, xs, transport = connected
    xs.dispatch(iq("get", payload_ns=None))
    [answer] = written(transport)
    assert condition(answer) == ["service-unavailable"]


@pytest.mark.parametrize("type_", ["result", "error"])
def test_answers_are_never_answered(connected, type_):
    __, xs, transport = connected
    xs.dispatch(iq(type_, stanza_id="nobody-asked"))
    assert written(transport) == []


@pytest.mark.parametrize("at_once", [True, False])
def test_a_request_a_handler_claims_is_answered_once_by_it(connected, at_once):
    client, xs, transport = connected
    handler = Claiming(at_once)
    handler.setHandlerParent(client)  # added once the stream is up: still before
    xs.dispatch(iq("get"))
    if not at_once:
        assert written(transport) == []
        handler.answer_later()
    [answer] = written(transport)
    assert (answer["type"], answer["id"]) == ("result", "q1")


def test_the_disco_handler_answers_alone_and_other_requests_still_get_the_error(
        connected):
    client, xs, transport = connected
    disco = XEP_0030(DiscoHost())
    disco.get_handler(client).setHandlerParent(client)
    own = client.bound_jid.full()
    xs.dispatch(iq("get", NS_DISCO_INFO, stanza_id="disco", to=own))
    xs.dispatch(iq("get", "jabber:iq:version", stanza_id="version", to=own))
    # not for one of the profile's JIDs: the disco handler leaves it
    xs.dispatch(iq("get", NS_DISCO_INFO, stanza_id="other", to="bob@example.org"))
    answers = written(transport)
    assert [(a["id"], a["type"]) for a in answers] == [
        ("disco", "result"), ("version", "error"), ("other", "error")]
    assert next(answers[0].elements(NS_DISCO_INFO, "query")) is not None
    assert condition(answers[1]) == condition(answers[2]) == ["service-unavailable"]


def test_each_new_stream_answers_once(connected):
    client, xs, transport = connected
    # a second stream (after a reconnection) has its own fallback, not a second one
    xs2, transport2 = stream_up(client)
    xs2.dispatch(iq("get"))
    assert len(written(transport2)) == 1


def test_an_unknown_request_is_a_log_line_not_a_traceback(connected):
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        __, xs, transport = connected
        xs.dispatch(iq("set", "urn:example:\u00e9"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert not [e for e in events if e.get("log_failure") is not None]
    assert any("urn:example:\u00e9" in formatEvent(e) and "service-unavailable"
               in formatEvent(e) for e in events)
    assert condition(written(transport)[0]) == ["service-unavailable"]


def test_an_element_given_to_the_fallback_directly_is_answered_once(connected):
    client, __, transport = connected
    request = domish.Element((None, "iq"), attribs={"type": "get", "id": "d"})
    client._on_unhandled_request(request)
    client._on_unhandled_request(request)
    assert len(written(transport)) == 1
