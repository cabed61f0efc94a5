"""A profile is never wedged by one bad stanza or one failing handler (issue #13).

A real backend (plugins XEP-0059, XEP-0060, PUBSUB_CACHE and XEP-0277) reads a node of
the private Prosody's or ejabberd's pubsub service.  Its connection is cut; during the
reconnection gap it is given what used to stop the next login half way: an IQ that
can't be serialized (a raw element with a lone surrogate, sent with
``client.request``, past the XEP-0060 checks), a queued stanza that became
unserializable after it was queued, and a handler that raises when the stream comes
up.  The profile must reconnect, end ``connected``, and answer pubsub requests.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel.subprotocols import XMPPHandler

from libervia.backend.xmpp.client import ConnectionState, StanzaNotSerializable
from libervia.backend.xmpp.iq import IQRequest

pytest.importorskip("slixmpp")

from tests.pubsub_support import (  # noqa: E402 - only once slixmpp is known there
    BackendFactory,
    Publisher,
    Reader,
    new_node,
    until,
)

pytestmark = pytest.mark.integration

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
LONE_SURROGATE = "\ud800"


class FailingHandler(XMPPHandler):
    """A plugin's handler with a bug in its stream set-up."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def connectionInitialized(self) -> None:  # noqa: N802 (Wokkel API)
        self.attempts += 1
        raise RuntimeError("plugin bug at stream initialization")


@pytest.fixture
def make_backend(tmp_path, sqlite_url):
    factory = BackendFactory(tmp_path / "local", sqlite_url)
    yield factory
    pytest_twisted.blockon(factory.close())


async def outcome(d: defer.Deferred):
    try:
        return await d
    except Exception as e:  # noqa: BLE001 - the test looks at what it failed with
        return e


@pytest_twisted.ensureDeferred
async def test_a_bad_stanza_and_a_failing_handler_during_a_drop_do_not_wedge_the_profile(
        xmpp_server, make_backend):
    node = new_node()
    await Publisher(xmpp_server).create(node, ["post1", "post2"])
    backend = await make_backend()
    reader = await Reader.connect(backend, xmpp_server, node)
    client = reader.client
    assert len((await reader.get(use_cache=False)).items) == 2

    client.xmlstream.transport.abortConnection()
    await until(lambda: defer.succeed(client.state is ConnectionState.RECONNECTING),
                "the connection drop")
    # during the gap
    payload = domish.Element((NS_PUBSUB, "pubsub"))
    payload.addElement("items")["node"] = node + LONE_SURROGATE
    refused = await outcome(client.request(
        IQRequest(JID(xmpp_server.pubsub_service), "get", payload)))
    assert isinstance(refused, StanzaNotSerializable)
    assert "U+D800" in str(refused)
    presence = domish.Element((None, "presence"))
    client.send(presence)  # queued, then spoilt by its sender
    presence["to"] = "nobody" + LONE_SURROGATE
    handler = FailingHandler()
    handler.setHandlerParent(client)

    await until(lambda: defer.succeed(backend.clients.is_connected(reader.name)),
                "the reconnection")
    assert handler.attempts == 1
    assert backend.clients.info(reader.name)["state"] == "connected"
    assert client._packetQueue == []
    answer = await reader.get(use_cache=False)
    assert sorted(item["id"] for item in answer.items) == ["post1", "post2"]
