"""A model of a pubsub service, answering the IQs a stub client sends, for unit tests.

It reproduces what was measured on the real servers (see the pubsub cache developer
documentation), with 12 items ``i00``..``i11`` published in order:

* ``ejabberd``: items in creation order; ``max_items=5`` gives ``i07..i11`` with an
  RSM set (count, first with index 7); RSM ``max=5`` gives ``i00..i04``; RSM cursors
  (``first``/``last``) are time stamps, not item ids, so ``after=i04`` gives nothing;
  ``before=''`` gives the last page; ``index=3`` gives ``i03..i07``; a re-published
  item keeps its place; ordering requests (XEP-0413) are ignored; items asked by id
  come in node order.
* ``prosody``: RSM is ignored (the whole node, no ``<set/>``); ``max_items=5`` gives
  ``i07..i11``; a re-published item moves to the end; items asked by id come in the
  order asked; items beyond a node's ``max_items`` are dropped without retraction
  notifications (ejabberd sends them); neither the pubsub component nor its domain
  answer software version requests (no mod_version), the component names itself in
  service discovery.
* ``ordering``: ejabberd-like, but it supports and announces XEP-0413 ordering.

Events are built as the service would send them; tests hand them to the XEP-0060
plugin.  Answers can be held (:meth:`StubClient.hold`) to let things happen in the
middle of a synchronisation.
"""

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from xml.sax.saxutils import quoteattr

from twisted.internet import defer
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from libervia.backend.core.xml_tools import parse_xml

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_ORDER_BY = "urn:xmpp:order-by:1"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_VERSION = "jabber:iq:version"
NS_ATOM = "http://www.w3.org/2005/Atom"

KINDS = ("ejabberd", "prosody", "ordering")
STAMP_BASE = 1_700_000_000_000_000


def entry(item_id: str, title: str | None = None) -> str:
    """An Atom entry payload (with characters needing escapes)."""
    title = title if title is not None else f"Entry {item_id} <&> 'ok'"
    escaped = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (f"<entry xmlns='{NS_ATOM}'><title>{escaped}</title><id>{item_id}</id>"
            f"<content type='text'>Text of {item_id}</content></entry>")


@dataclass
class FakeItem:
    id: str
    payload: str
    created: int
    modified: int

    @property
    def cursor(self) -> str:
        return str(STAMP_BASE + self.created)

    def xml(self) -> str:
        return f"<item id={quoteattr(self.id)}>{self.payload}</item>"


@dataclass
class FakeNode:
    name: str
    items: list[FakeItem] = field(default_factory=list)
    title: str = ""
    payload_type: str | None = None
    subscribers: set[str] = field(default_factory=set)
    #: subscription refused (to test synchronisation errors)
    closed: bool = False
    #: items refused to readers (``forbidden``), as for a node of a closed access model
    private: bool = False
    #: oldest items beyond this are dropped
    max_items: int | None = None


class FakePubsubService:
    """A pubsub service, with the behaviour of ``kind`` (see the module docstring)."""

    def __init__(self, kind: str, jid: str = "pubsub.example.org") -> None:
        assert kind in KINDS
        self.kind = kind
        self.jid = JID(jid)
        self.nodes: dict[str, FakeNode] = {}
        self.rsm = kind != "prosody"
        self.moves_republished = kind == "prosody"
        self.ids_in_request_order = kind == "prosody"
        self.order_by = kind == "ordering"
        self.software = "Prosody" if kind == "prosody" else "ejabberd"
        self._seq = 0
        #: retractions of items dropped beyond a node's max_items (ejabberd notifies
        #: them, Prosody drops them silently)
        self.trim_events: list[domish.Element] = []
        #: item requests received (``<items/>`` elements), to count them
        self.items_requests: list[domish.Element] = []

    # changes made by other entities

    def create(self, node: str, title: str = "") -> FakeNode:
        self.nodes[node] = FakeNode(node, title=title)
        return self.nodes[node]

    def publish(self, node: str, item_id: str, payload: str | None = None,
                with_payload: bool = True) -> domish.Element:
        """Publish (or re-publish) an item; return the event notification."""
        fake_node = self.nodes.get(node) or self.create(node)
        payload = payload if payload is not None else entry(item_id)
        self._seq += 1
        existing = next((i for i in fake_node.items if i.id == item_id), None)
        if existing is None:
            fake_node.items.append(FakeItem(item_id, payload, self._seq, self._seq))
        else:
            existing.payload = payload
            existing.modified = self._seq
            if self.moves_republished:
                fake_node.items.remove(existing)
                fake_node.items.append(existing)
        if fake_node.max_items is not None and len(fake_node.items) > fake_node.max_items:
            dropped = fake_node.items[:len(fake_node.items) - fake_node.max_items]
            fake_node.items = fake_node.items[len(dropped):]
            if self.kind != "prosody":
                self.trim_events += [self._event(
                    f"<items node={quoteattr(node)}><retract id={quoteattr(i.id)}/></items>")
                    for i in dropped]
        item_xml = (FakeItem(item_id, payload, 0, 0).xml() if with_payload
                    else f"<item id={quoteattr(item_id)}/>")
        return self._event(f"<items node={quoteattr(node)}>{item_xml}</items>")

    def retract(self, node: str, item_ids: list[str]) -> domish.Element:
        fake_node = self.nodes[node]
        fake_node.items = [i for i in fake_node.items if i.id not in item_ids]
        retracts = "".join(f"<retract id={quoteattr(i)}/>" for i in item_ids)
        return self._event(f"<items node={quoteattr(node)}>{retracts}</items>")

    def purge(self, node: str) -> domish.Element:
        self.nodes[node].items = []
        return self._event(f"<purge node={quoteattr(node)}/>")

    def delete(self, node: str) -> domish.Element:
        del self.nodes[node]
        return self._event(f"<delete node={quoteattr(node)}/>")

    def configure(self, node: str, title: str) -> domish.Element:
        self.nodes[node].title = title
        return self._event(
            f"<configuration node={quoteattr(node)}><x xmlns='jabber:x:data' "
            "type='result'><field var='FORM_TYPE' type='hidden'><value>"
            f"{NS_PUBSUB}#node_config</value></field><field var='pubsub#title'>"
            f"<value>{title}</value></field></x></configuration>")

    def _event(self, content: str) -> domish.Element:
        return parse_xml(
            f"<message xmlns='jabber:client' from='{self.jid.full()}' "
            f"to='alice@example.org'><event xmlns='{NS_PUBSUB}#event'>{content}</event>"
            "</message>")

    # helpers for tests

    def ids(self, node: str) -> list[str]:
        return [i.id for i in self.nodes[node].items]

    def id_of_cursor(self, cursor: str | None) -> str | None:
        """The item id an RSM cursor given by this service stands for."""
        if cursor is None:
            return None
        for fake_node in self.nodes.values():
            for item in fake_node.items:
                if item.cursor == cursor:
                    return item.id
        return cursor

    # answering requests

    def answer(self, iq: domish.Element) -> domish.Element:
        """The answer to ``iq`` (sent to this service); raise StanzaError on errors."""
        child = next(iq.elements(), None)
        if child is None:
            raise jabber_error.StanzaError("bad-request")
        if (child.uri, child.name) == (NS_VERSION, "query"):
            if self.kind == "prosody":
                raise jabber_error.StanzaError("service-unavailable")
            return self.version_answer()
        if (child.uri, child.name) == (NS_DISCO_ITEMS, "query") and (
                not child.getAttribute("node")):
            # the service's own items: its nodes
            listed = "".join(
                f"<item jid='{self.jid.full()}' node={quoteattr(n.name)}"
                + (f" name={quoteattr(n.title)}" if n.title else "") + "/>"
                for n in self.nodes.values())
            return self._result(f"<query xmlns='{NS_DISCO_ITEMS}'>{listed}</query>")
        if (child.uri, child.name) == (NS_DISCO_ITEMS, "query"):
            fake_node = self._node(child["node"])
            listed = "".join(f"<item jid='{self.jid.full()}' name={quoteattr(i.id)}/>"
                             for i in fake_node.items)
            return self._result(f"<query xmlns='{NS_DISCO_ITEMS}' "
                                f"node={quoteattr(fake_node.name)}>{listed}</query>")
        if (child.uri, child.name) == (NS_DISCO_INFO, "query"):
            return self._disco(child.getAttribute("node"))
        if is_items_request(iq):
            return self._items(child)
        if child.uri == NS_PUBSUB and iq["type"] == "set":
            subscribe = next(child.elements(NS_PUBSUB, "subscribe"), None)
            if subscribe is not None:
                fake_node = self._node(subscribe["node"])
                if fake_node.closed:
                    raise jabber_error.StanzaError("not-authorized")
                fake_node.subscribers.add(subscribe["jid"])
                return self._result(
                    f"<pubsub xmlns='{NS_PUBSUB}'><subscription node="
                    f"{quoteattr(fake_node.name)} jid={quoteattr(subscribe['jid'])} "
                    "subscription='subscribed'/></pubsub>")
        raise jabber_error.StanzaError("feature-not-implemented")

    def version_answer(self) -> domish.Element:
        return self._result(f"<query xmlns='{NS_VERSION}'><name>{self.software}</name>"
                            "<version>1.0</version></query>")

    @staticmethod
    def _result(content: str) -> domish.Element:
        return parse_xml(f"<iq xmlns='jabber:client' type='result'>{content}</iq>")

    def _node(self, name: str) -> FakeNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise jabber_error.StanzaError("item-not-found") from None

    def _disco(self, node: str | None) -> domish.Element:
        if node is None:
            features = [NS_PUBSUB, NS_DISCO_INFO] + ([NS_ORDER_BY] if self.order_by
                                                     else [])
            name = ("Prosody PubSub Service" if self.kind == "prosody"
                    else "Publish-Subscribe")
            return self._result(
                f"<query xmlns='{NS_DISCO_INFO}'><identity category='pubsub' "
                f"type='service' name='{name}'/>"
                + "".join(f"<feature var='{f}'/>" for f in features) + "</query>")
        fake_node = self._node(node)
        fields = (f"<field var='FORM_TYPE' type='hidden'><value>{NS_PUBSUB}#meta-data"
                  f"</value></field><field var='pubsub#title'><value>{fake_node.title}"
                  "</value></field>")
        if fake_node.payload_type:
            fields += (f"<field var='pubsub#type'><value>{fake_node.payload_type}"
                       "</value></field>")
        return self._result(
            f"<query xmlns='{NS_DISCO_INFO}' node={quoteattr(node)}><identity "
            "category='pubsub' type='leaf'/><x xmlns='jabber:x:data' type='result'>"
            f"{fields}</x></query>")

    def _items(self, pubsub: domish.Element) -> domish.Element:
        items_elt = next(pubsub.elements(NS_PUBSUB, "items"))
        self.items_requests.append(items_elt)
        fake_node = self._node(items_elt["node"])
        if fake_node.private:
            raise jabber_error.StanzaError("forbidden")
        items = list(fake_node.items)
        order = next(pubsub.elements(NS_ORDER_BY, "order"), None)
        if self.order_by and order is not None and order.getAttribute("field") == (
            "modification"
        ):
            items.sort(key=lambda i: i.modified)
        asked = [i["id"] for i in items_elt.elements(NS_PUBSUB, "item")]
        set_elt = next(pubsub.elements(NS_RSM, "set"), None)
        max_items = items_elt.getAttribute("max_items")
        rsm = ""
        if asked:
            if self.ids_in_request_order:
                by_id = {i.id: i for i in items}
                items = [by_id[i] for i in dict.fromkeys(asked) if i in by_id]
            else:
                items = [i for i in items if i.id in asked]
        elif set_elt is not None and self.rsm:
            items, rsm = self._page(items, set_elt)
        elif max_items is not None:
            count = len(items)
            items = items[-int(max_items):] if int(max_items) else []
            if self.rsm:
                rsm = self._set(items, count - len(items), count)
        content = "".join(i.xml() for i in items)
        return self._result(
            f"<pubsub xmlns='{NS_PUBSUB}'><items node={quoteattr(fake_node.name)}>"
            f"{content}</items>{rsm}</pubsub>")

    def _page(self, items: list[FakeItem], set_elt: domish.Element
              ) -> tuple[list[FakeItem], str]:
        def value(name: str) -> str | None:
            elt = next(set_elt.elements(NS_RSM, name), None)
            return None if elt is None else str(elt)

        count = len(items)
        size = int(value("max")) if value("max") is not None else count
        cursors = [i.cursor for i in items]
        after, before, index = value("after"), value("before"), value("index")
        if after is not None:
            if after not in cursors:
                return [], self._set([], 0, count)
            start = cursors.index(after) + 1
        elif before is not None:
            if before == "":
                end = count
            elif before in cursors:
                end = cursors.index(before)
            else:
                return [], self._set([], 0, count)
            start = max(0, end - size)
            return items[start:end], self._set(items[start:end], start, count)
        else:
            start = int(index) if index is not None else 0
        page = items[start:start + size]
        return page, self._set(page, start, count)

    @staticmethod
    def _set(page: list[FakeItem], index: int, count: int) -> str:
        if not page:
            return f"<set xmlns='{NS_RSM}'><count>{count}</count></set>"
        return (f"<set xmlns='{NS_RSM}'><first index='{index}'>{page[0].cursor}</first>"
                f"<last>{page[-1].cursor}</last><count>{count}</count></set>")


class LyingService(FakePubsubService):
    """An ejabberd-like service that pages wrongly in one way, ``lie``:

    ``count_low`` / ``count_zero``
        announces 5 (or 0) items whatever the node holds;
    ``no_set``
        honours RSM ``max`` but answers without any ``<set/>``;
    ``ignores_after``
        answers the first page again to a request for the next one;
    ``cursor_back``
        gives its second page the ``last`` cursor of the first one;
    ``repeat_other``
        repeats the node's first item, with another payload, in each later page;
    ``repeat_inside``
        gives the first page's first item twice in that page, the second time with
        another payload;
    ``repeat_same``
        repeats the first item, unchanged, in each later page (an honest overlap).
    """

    LIES = ("count_low", "count_zero", "no_set", "ignores_after", "cursor_back",
            "repeat_other", "repeat_inside", "repeat_same")

    def __init__(self, lie: str, jid: str = "pubsub.example.org") -> None:
        super().__init__("ejabberd", jid)
        assert lie in self.LIES
        self.lie = lie

    def _page(self, items: list[FakeItem], set_elt: domish.Element
              ) -> tuple[list[FakeItem], str]:
        after = next(set_elt.elements(NS_RSM, "after"), None)
        if self.lie == "ignores_after" and after is not None:
            set_elt.children.remove(after)
        page, rsm = super()._page(items, set_elt)
        count = f"<count>{len(items)}</count>"
        if self.lie == "count_low":
            rsm = rsm.replace(count, "<count>5</count>")
        elif self.lie == "count_zero":
            rsm = rsm.replace(count, "<count>0</count>")
        elif self.lie == "no_set":
            rsm = ""
        elif self.lie == "cursor_back" and after is not None and page:
            size = len(page)
            first_page_last = items[size - 1].cursor
            rsm = rsm.replace(f"<last>{page[-1].cursor}</last>",
                              f"<last>{first_page_last}</last>")
        elif self.lie in ("repeat_other", "repeat_same") and after is not None and page:
            first = items[0]
            payload = first.payload if self.lie == "repeat_same" else entry(first.id, "x")
            page = [FakeItem(first.id, payload, first.created, first.modified)] + page
        elif self.lie == "repeat_inside" and after is None and page:
            first = page[0]
            page = page + [FakeItem(first.id, entry(first.id, "other"), first.created,
                                    first.modified)]
        return page, rsm


class SilentComponent(FakePubsubService):
    """An ejabberd-like pubsub component that tells neither its software nor a known
    name, on a server that says it runs Prosody."""

    def __init__(self, jid: str = "pubsub.example.org") -> None:
        super().__init__("ejabberd", jid)
        #: what the server hosting it answers (see StubClient)
        self.software = "Prosody"

    def answer(self, iq: domish.Element) -> domish.Element:
        child = next(iq.elements(), None)
        if child is not None and (child.uri, child.name) == (NS_VERSION, "query"):
            raise jabber_error.StanzaError("service-unavailable")
        return super().answer(iq)


class StubClient:
    """A profile's client: its requests are answered by fake services, at once or when
    released (see :meth:`hold`)."""

    def __init__(self, name: str, *services: FakePubsubService) -> None:
        self.jid = JID(f"{name}@example.org/test")
        self.profile = SimpleNamespace(name=name)
        self.services = {s.jid.full(): s for s in services}
        self.sent: list[domish.Element] = []
        self._hold: Any = None
        self.held: list[tuple[domish.Element, defer.Deferred]] = []
        self.held_signal: defer.Deferred | None = None

    def hold(self, predicate: Any) -> None:
        """Keep the answers to the requests ``predicate(iq)`` accepts until released."""
        self._hold = predicate

    def wait_held(self) -> defer.Deferred:
        """Fires once a request is held."""
        if self.held:
            return defer.succeed(None)
        self.held_signal = defer.Deferred()
        return self.held_signal

    def release(self) -> None:
        """Answer the held requests (with the services' state of now), stop holding."""
        self._hold = None
        held, self.held = self.held, []
        for iq, d in held:
            self._answer(iq, d)

    def request(self, request: Any) -> defer.Deferred:
        iq = request.toElement()
        iq["from"] = self.jid.full()
        self.sent.append(iq)
        d: defer.Deferred = defer.Deferred()
        if self._hold is not None and self._hold(iq):
            self.held.append((iq, d))
            if self.held_signal is not None:
                signal, self.held_signal = self.held_signal, None
                signal.callback(None)
        else:
            self._answer(iq, d)
        return d

    def _answer(self, iq: domish.Element, d: defer.Deferred) -> None:
        to = iq.getAttribute("to")
        service = self.services.get(to)
        try:
            if service is not None:
                answer = service.answer(iq)
            elif to == "example.org" and self.services:
                # the server itself answers software version requests, but Prosody
                # only with mod_version (not loaded on the test servers)
                server = next(iter(self.services.values()))
                if server.kind == "prosody":
                    raise jabber_error.StanzaError("service-unavailable")
                answer = server.version_answer()
            else:
                raise jabber_error.StanzaError("service-unavailable")
        except jabber_error.StanzaError as e:
            d.errback(e)
        else:
            d.callback(answer)


def is_items_request(iq: domish.Element) -> bool:
    pubsub = next(iq.elements(NS_PUBSUB, "pubsub"), None)
    return (pubsub is not None and iq.getAttribute("type") == "get"
            and next(pubsub.elements(NS_PUBSUB, "items"), None) is not None)


def is_page_request(iq: domish.Element) -> bool:
    """An items request carrying RSM (as a synchronisation sends)."""
    return is_items_request(iq) and next(iq.pubsub.elements(NS_RSM, "set"), None) is not None
