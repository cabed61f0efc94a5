"""Pubsub event notifications: what services send, as event objects for the triggers.

Each action of a notification becomes one event object (:class:`ItemsEvent`,
:class:`RetractEvent`, :class:`PurgeEvent`, :class:`DeleteEvent`,
:class:`ConfigurationEvent`), passed to the trigger point named by its ``TRIGGER``
with the client: ``host.trigger.add(ItemsEvent.TRIGGER, on_items)`` then
``on_items(client, event)``.  Frontends get every event too, cached node or not, as
the bridge signal :data:`EVENT_SIGNAL` (see :func:`signal_data`).

:class:`PubsubHandler` receives the notifications of one profile and has them handled
one after the other, in the order they came; plain notifications of new items queued
in a row while earlier notifications were being handled form a *burst*: one
:class:`ItemsEvent` per node, the nodes' events handled at the same time (see
:func:`burst_events`).
"""

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from twisted.internet import defer
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import data_form
from wokkel.subprotocols import XMPPHandler

from libervia.backend.core.interfaces import Client
from libervia.backend.core.log import getLogger
from libervia.backend.plugins.xep_0060.stanzas import NS_PUBSUB, NS_PUBSUB_EVENT, form_values

log = getLogger(__name__)

#: item notifications handled together at most (bounds a transaction and a delay)
MAX_BURST = 500
#: bridge signal of every event received, whatever the node (``li pubsub watch``)
EVENT_SIGNAL = "pubsub_event"
EVENT_SIGNAL_DOC = ("a pubsub event was received: params {profile, service, node, type "
                    "(items, retract, purge, delete, configuration), item_ids, items "
                    "(XML), options}")

#: notifications waiting to be handled beyond which the stream is not read any more,
#: until half of them are handled: a server notifying faster than the backend handles
#: makes its own queue grow, not the backend's memory
MAX_BACKLOG = MAX_BURST


@dataclass(frozen=True)
class PubsubEvent:
    """Something a service notified about one of its nodes.

    :ivar message: the notification (for an event made of several notifications, the
        last one)
    """

    TRIGGER: ClassVar[str]
    #: the event's ``type`` in the :data:`EVENT_SIGNAL` signal
    KIND: ClassVar[str]
    service: jabber_jid.JID
    node: str
    message: domish.Element


@dataclass(frozen=True)
class ItemsEvent(PubsubEvent):
    """New or updated items: ``<item/>`` elements as sent (pubsub#event namespace)."""

    TRIGGER: ClassVar[str] = "XEP-0060_items"
    KIND: ClassVar[str] = "items"
    items: list[domish.Element]


@dataclass(frozen=True)
class RetractEvent(PubsubEvent):
    """Items retracted."""

    TRIGGER: ClassVar[str] = "XEP-0060_retract"
    KIND: ClassVar[str] = "retract"
    item_ids: list[str]


@dataclass(frozen=True)
class PurgeEvent(PubsubEvent):
    """Every item of the node retracted."""

    TRIGGER: ClassVar[str] = "XEP-0060_purge"
    KIND: ClassVar[str] = "purge"


@dataclass(frozen=True)
class DeleteEvent(PubsubEvent):
    """The node was deleted."""

    TRIGGER: ClassVar[str] = "XEP-0060_delete"
    KIND: ClassVar[str] = "delete"


@dataclass(frozen=True)
class ConfigurationEvent(PubsubEvent):
    """The node's configuration changed: its new options, when the service sent them."""

    TRIGGER: ClassVar[str] = "XEP-0060_configuration"
    KIND: ClassVar[str] = "configuration"
    options: dict[str, Any] | None


def event_actions(message: domish.Element) -> list[domish.Element]:
    """The actions (``<items/>``, ``<purge/>``...) of a notification."""
    event = next(message.elements(NS_PUBSUB_EVENT, "event"), None)
    if event is None:
        return []
    return [a for a in event.elements() if a.uri == NS_PUBSUB_EVENT]


def parse_events(service: jabber_jid.JID, message: domish.Element) -> list[PubsubEvent]:
    """The events of a notification, in its order; actions without node are left out
    (with a log line)."""
    events: list[PubsubEvent] = []
    for action in event_actions(message):
        node = action.getAttribute("node")
        if not node:
            log.warn("ignoring a pubsub {kind} event without node from {service}",
                     kind=action.name, service=service.full())
            continue
        if action.name == "items":
            items = list(action.elements(NS_PUBSUB_EVENT, "item"))
            retracted = [r.getAttribute("id") for r in
                         action.elements(NS_PUBSUB_EVENT, "retract")]
            if items:
                events.append(ItemsEvent(service, node, message, items))
            if retracted:
                events.append(RetractEvent(service, node, message,
                                           [i for i in retracted if i]))
        elif action.name == "purge":
            events.append(PurgeEvent(service, node, message))
        elif action.name == "delete":
            events.append(DeleteEvent(service, node, message))
        elif action.name == "configuration":
            form_elt = next(action.elements(data_form.NS_X_DATA, "x"), None)
            options = (form_values(data_form.Form.fromElement(form_elt))
                       if form_elt is not None else None)
            events.append(ConfigurationEvent(service, node, message, options))
    return events


def items_notification(message: domish.Element
                       ) -> tuple[str | None, str, frozenset[str]] | None:
    """``(sender, node, item ids)`` of a plain notification of new items, else None.

    Plain: one ``<items/>`` of a named node holding ``<item/>`` elements only, each
    with its own id (no retraction, nothing else in the event).
    """
    actions = event_actions(message)
    if len(actions) != 1 or actions[0].name != "items":
        return None
    node = actions[0].getAttribute("node")
    ids = []
    for child in actions[0].elements():
        if child.uri != NS_PUBSUB_EVENT or child.name != "item":
            return None
        ids.append(child.getAttribute("id"))
    if not node or not ids or None in ids or len(set(ids)) < len(ids):
        return None
    return message.getAttribute("from"), node, frozenset(ids)


def burst_event(service: jabber_jid.JID, messages: list[domish.Element]) -> ItemsEvent:
    """One :class:`ItemsEvent` of plain item notifications of one node (see
    :func:`items_notification`), in the order they came."""
    items: list[domish.Element] = []
    for message in messages:
        items.extend(event_actions(message)[0].elements(NS_PUBSUB_EVENT, "item"))
    node = event_actions(messages[0])[0].getAttribute("node")
    return ItemsEvent(service, node, messages[-1], items)


def burst_groups(messages: list[domish.Element]) -> list[list[domish.Element]]:
    """Plain item notifications (see :func:`items_notification`) grouped by node
    (sender and node name), in the order each node first came, each group in the order
    its notifications came.

    :raise ValueError: one of ``messages`` is not a plain item notification
    """
    groups: dict[tuple[str | None, str], list[domish.Element]] = {}
    for message in messages:
        key = items_notification(message)
        if key is None:
            raise ValueError("only plain item notifications make a burst")
        groups.setdefault(key[:2], []).append(message)
    return list(groups.values())


def as_pubsub_item(item: domish.Element) -> domish.Element:
    """An event's ``<item/>`` (pubsub#event namespace) as the items request gives it."""
    if item.uri == NS_PUBSUB:
        return item
    converted = domish.Element((NS_PUBSUB, "item"))
    for key, value in item.attributes.items():
        converted[key] = value
    for child in item.children:
        converted.addChild(child)
    return converted


def item_text(item: domish.Element) -> str:
    """The XML text of an event's ``<item/>``, in the pubsub namespace as the items
    request gives it (the element itself is left as it is).

    :raise RecursionError: the item is nested too deeply for the serialiser
    """
    if item.uri == NS_PUBSUB:
        return item.toXml()
    converted = domish.Element((NS_PUBSUB, "item"))
    converted.attributes = dict(item.attributes)
    # shared, not re-parented: whoever else holds the event keeps it whole
    converted.children = list(item.children)
    return converted.toXml()


def signal_data(profile: str, event: PubsubEvent) -> dict[str, Any]:
    """The params of the :data:`EVENT_SIGNAL` signal of ``event``.

    ``profile``, ``service``, ``node``, ``type`` (the event's ``KIND``), and by type:
    ``item_ids`` and ``items`` (XML texts) for new items, ``item_ids`` for
    retractions, ``options`` (or ``null``) for a configuration.  An item the serialiser
    can't write (nested too deeply) is left out of ``items``, with a log line.
    """
    data: dict[str, Any] = {"profile": profile, "service": event.service.full(),
                            "node": event.node, "type": event.KIND}
    if isinstance(event, ItemsEvent):
        data["item_ids"] = [item.getAttribute("id") for item in event.items]
        data["items"] = []
        for item in event.items:
            try:
                data["items"].append(item_text(item))
            except RecursionError:
                log.warn("item {id} of an event of {node} is nested too deeply to be "
                         "shown to frontends", id=item.getAttribute("id"), node=event.node)
    elif isinstance(event, RetractEvent):
        data["item_ids"] = list(event.item_ids)
    elif isinstance(event, ConfigurationEvent):
        data["options"] = event.options
    return data


class PubsubHandler(XMPPHandler):
    """Receives pubsub event notifications for one profile.

    :param dispatch: ``dispatch(client, messages)`` handles one notification, or a
        burst of plain item notifications (of one node or several: see
        :func:`burst_groups`)
    """

    def __init__(self, dispatch: Callable[[Client, list[domish.Element]], Awaitable[None]],
                 client: Client) -> None:
        super().__init__()
        self.dispatch = dispatch
        self.client = client
        # events are handled one after the other, in the order they came: a retraction
        # must not overtake the publication it retracts
        self._queue: deque[domish.Element] = deque()
        self._draining = False
        # reading from the server held while the queue is long (see MAX_BACKLOG)
        self._holding = False

    def connectionInitialized(self) -> None:  # noqa: N802 (Wokkel API)
        self.xmlstream.addObserver(
            f'/message/event[@xmlns="{NS_PUBSUB_EVENT}"]', self._on_event
        )

    def _on_event(self, message: domish.Element) -> None:
        if message.getAttribute("type") == "error":
            return
        message.handled = True
        self._queue.append(message)
        if len(self._queue) >= MAX_BACKLOG:
            self._hold_reading(True)
        if not self._draining:
            self._draining = True
            d = defer.ensureDeferred(self._drain())
            d.addErrback(lambda f: log.failure("error while handling pubsub events", f))

    async def _drain(self) -> None:
        """Handle the queued events; new items queued in a row go together."""
        try:
            while self._queue:
                burst = self._next_burst()
                if len(self._queue) <= MAX_BACKLOG // 2:
                    self._hold_reading(False)
                try:
                    await self.dispatch(self.client, burst)
                except Exception:
                    log.failure("error while handling a pubsub event")
        finally:
            self._draining = False
            self._hold_reading(False)

    def _hold_reading(self, hold: bool) -> None:
        """Stop or resume reading the stream (a client without flow control reads on)."""
        hold_reading = getattr(self.client, "hold_reading", None)
        if hold != self._holding and hold_reading is not None:
            self._holding = hold
            hold_reading(hold)

    def _next_burst(self) -> list[domish.Element]:
        """The next notification, or the plain item notifications queued in a row
        (of any nodes), up to any other event or an item id seen again in its node."""
        first = self._queue.popleft()
        key = items_notification(first)
        burst = [first]
        if key is None:
            return burst
        seen: dict[tuple[str | None, str], set[str]] = {key[:2]: set(key[2])}
        while self._queue and len(burst) < MAX_BURST:
            following = items_notification(self._queue[0])
            if following is None:
                break
            ids = seen.setdefault(following[:2], set())
            # an id seen again ends the burst: each notification of it is handled on
            # its own, as the first one sets the item's creation time
            if ids & following[2]:
                break
            ids.update(following[2])
            burst.append(self._queue.popleft())
        return burst
