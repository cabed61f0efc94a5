"""A pubsub service that lies, as an external component (XEP-0114) of the test Prosody.

It holds one node of Atom entries and pages it with RSM, but announces a count lower
than what it gives: what a buggy or hostile service on the network may do.  The cache
must not take the node for complete.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish
from wokkel import component
from wokkel.subprotocols import XMPPHandler

from tests.servers.prosody import ProsodyServer

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_ATOM = "http://www.w3.org/2005/Atom"


class LyingPubsub(XMPPHandler):
    """Answers pubsub requests for ``node``, announcing ``announced`` items in RSM sets."""

    def __init__(self, node: str, count: int, announced: int) -> None:
        super().__init__()
        self.node = node
        self.ids = [f"e{n:03}" for n in range(count)]
        self.announced = announced
        self.ready: defer.Deferred = defer.Deferred()

    def connectionInitialized(self) -> None:  # noqa: N802 (Wokkel API)
        self.xmlstream.addObserver("/iq", self._on_iq)
        if not self.ready.called:
            self.ready.callback(None)

    def _on_iq(self, iq: domish.Element) -> None:
        if iq.getAttribute("type") not in ("get", "set"):
            return
        iq.handled = True
        child = next(iq.elements(), None)
        try:
            if child is None:
                raise jabber_error.StanzaError("bad-request")
            if (child.uri, child.name) == (NS_DISCO_INFO, "query"):
                answer = self._disco(child)
            elif child.uri == NS_PUBSUB and iq["type"] == "get":
                answer = self._items(child)
            elif child.uri == NS_PUBSUB and next(child.elements(NS_PUBSUB, "subscribe"),
                                                 None) is not None:
                answer = domish.Element((NS_PUBSUB, "pubsub"))
                subscription = answer.addElement("subscription")
                subscription["node"] = self.node
                subscription["jid"] = child.subscribe["jid"]
                subscription["subscription"] = "subscribed"
            else:
                raise jabber_error.StanzaError("service-unavailable")
        except jabber_error.StanzaError as e:
            self.send(e.toResponse(iq))
            return
        response = xmlstream.toResponse(iq, "result")
        response.addChild(answer)
        self.send(response)

    def _disco(self, query: domish.Element) -> domish.Element:
        answer = domish.Element((NS_DISCO_INFO, "query"))
        identity = answer.addElement("identity")
        identity["category"] = "pubsub"
        if query.getAttribute("node"):
            answer["node"] = query["node"]
            identity["type"] = "leaf"
        else:
            identity["type"] = "service"
            identity["name"] = "Some PubSub Service"
            answer.addElement("feature")["var"] = NS_PUBSUB
        return answer

    def _entry(self, parent: domish.Element, item_id: str) -> None:
        item = parent.addElement("item")
        item["id"] = item_id
        entry = item.addElement((NS_ATOM, "entry"))
        entry.addElement("title", content=f"Entry {item_id}")
        entry.addElement("id", content=item_id)

    def _items(self, pubsub: domish.Element) -> domish.Element:
        request = next(pubsub.elements(NS_PUBSUB, "items"))
        if request.getAttribute("node") != self.node:
            raise jabber_error.StanzaError("item-not-found")
        answer = domish.Element((NS_PUBSUB, "pubsub"))
        items = answer.addElement("items")
        items["node"] = self.node
        rsm = next(pubsub.elements(NS_RSM, "set"), None)
        if rsm is None:
            max_items = request.getAttribute("max_items")
            ids = self.ids[-int(max_items):] if max_items else self.ids
            for item_id in ids:
                self._entry(items, item_id)
            return answer
        size = int(str(next(rsm.elements(NS_RSM, "max"))))
        after = next(rsm.elements(NS_RSM, "after"), None)
        start = self.ids.index(str(after)) + 1 if after is not None else 0
        page = self.ids[start:start + size]
        for item_id in page:
            self._entry(items, item_id)
        answer_set = answer.addElement((NS_RSM, "set"))
        if page:
            answer_set.addElement("first", content=page[0])["index"] = str(start)
            answer_set.addElement("last", content=page[-1])
        answer_set.addElement("count", content=str(self.announced))
        return answer


async def start(server: ProsodyServer, handler: LyingPubsub) -> component.Component:
    """Connect ``handler`` to the test Prosody as its external component."""
    comp = component.Component("127.0.0.1", server.component_port, server.component_jid,
                               server.component_secret)
    handler.setHandlerParent(comp)
    comp.startService()
    await handler.ready.addTimeout(30, reactor)
    return comp
