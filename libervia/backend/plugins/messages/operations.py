"""Sending and receiving messages, and the history: what other plugins call
(:class:`Messages`), and the handler of each profile's stream.

Every message of a profile, sent or received, goes through one queue per profile, so
that they are stored in the order they came.  On a new stream, the first thing in that
queue is the question to the account's server whether it gives stanza-ids (XEP-0359):
only then is a ``<stanza-id by="the account"/>`` trusted; otherwise anyone could have
written it, and it is left out (with a log line).
"""

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel.subprotocols import XMPPHandler

from libervia.backend.core.exceptions import NotFound
from libervia.backend.core.interfaces import Client
from libervia.backend.core.jids import jid_or_none
from libervia.backend.core.log import getLogger
from libervia.backend.core.xml_tools import NOT_XML_CHAR
from libervia.backend.memory.storage import HistoryFilter, HistoryMessage, HistoryPage
from libervia.backend.plugins.messages.stanzas import (
    MAX_ID,
    NS_SID,
    TYPES,
    InvalidMessage,
    MessageCancelled,
    ReadMessage,
    build_message,
    checked_texts,
    read_message,
)
from libervia.backend.xmpp.profiles import StorageHost

log = getLogger(__name__)

#: asynchronous trigger point awaited before a message is sent, with ``(client,
#: event)``, a :class:`MessageSending`: callbacks may change ``event.element`` (what
#: goes out: an encryption plugin replaces its body) and ``event.message`` (what is
#: stored), or return ``False`` to cancel it (``event.reason`` says why)
TRIGGER_SEND = "message_send"
#: asynchronous trigger point awaited for each message received that this plugin
#: reads (chat, normal, headline), before it is stored, with ``(client, event)``, a
#: :class:`MessageReceived`: callbacks may change ``event.message``, or return
#: ``False`` to claim it (it is then neither stored nor signalled).  Messages without
#: body or subject (chat states, receipts...) pass here too, with nothing to store
TRIGGER_RECEIVED = "message_received"
#: asynchronous trigger point awaited on each new stream of a profile, with
#: ``(client)``, once the server said whether it gives stanza-ids: no message of the
#: stream is read before its callbacks are done (the carbons plugin enables carbons
#: there); what they answer does not matter
TRIGGER_STREAM = "message_stream"
#: asynchronous trigger point awaited after a message (sent or received) is stored,
#: with ``(client, message)``, the stored :class:`HistoryMessage`; what callbacks
#: answer does not matter
TRIGGER_STORED = "message_stored"
#: bridge signal: a message was stored (sent or received)
MESSAGE_NEW_SIGNAL = "message_new"
#: largest ``extra`` given to :meth:`Messages.send`, as JSON text
MAX_EXTRA = 64 * 1024
#: seconds the question about stanza-ids may take at connection
SERVER_CHECK_TIMEOUT = 30.0
#: the largest page of history
MAX_LIMIT = 1000

T = TypeVar("T")


@dataclass
class MessageSending:
    """A message about to be sent (see :data:`TRIGGER_SEND`)."""

    message: HistoryMessage
    element: domish.Element
    #: why a callback cancelled it, for the caller's error
    reason: str | None = None


@dataclass
class MessageReceived:
    """A message received (see :data:`TRIGGER_RECEIVED`); ``message`` is ``None`` when
    it has nothing to store (no body, no subject)."""

    element: domish.Element
    read: ReadMessage
    message: HistoryMessage | None


class MessagesHandler(XMPPHandler):
    """The message side of one profile's stream."""

    def __init__(self, plugin: "Messages", client: Client) -> None:
        super().__init__()
        self.plugin = plugin
        self.client = client

    def connectionInitialized(self) -> None:  # noqa: N802 (Wokkel API)
        self.xmlstream.addObserver("/message", self._on_message)
        self.plugin.stream_started(self.client)

    def _on_message(self, element: domish.Element) -> None:
        try:
            self.plugin.on_message(self.client, element)
        except Exception:
            log.failure("profile {profile}: error while handling a message",
                        profile=self.client.profile.name)


class Messages:
    """Messages and history; ``host.plugins["MESSAGES"]``.

    :param max_body: characters of bodies (and subjects) of a message: longer received
        ones are cut (and flagged ``truncated`` in ``extra``), longer ones to send
        refused
    """

    def __init__(self, host: StorageHost, max_body: int) -> None:
        self.host = host
        self.storage = host.storage.history
        self.max_body = max_body
        #: what each profile runs one at a time, in arrival order
        self._locks: dict[str, defer.DeferredLock] = {}
        #: whether the server of each connected profile gives stanza-ids (XEP-0359)
        self.stanza_ids: dict[str, bool] = {}
        host.bridge.register_signal(
            MESSAGE_NEW_SIGNAL,
            "a message was stored: params {profile, via (sent: by this backend; live: "
            "received; carbon: a copy of another device's), message ({uid, from, to, "
            "with, timestamp, received, type, direction, body, bodies, subject, "
            "subjects, thread, thread_parent, stanza_id, origin_id, id, extra})}")

    def get_handler(self, client: Client) -> XMPPHandler:
        return MessagesHandler(self, client)

    def _serial(self, name: str, func: Callable[[], Awaitable[T]]) -> defer.Deferred:
        """Run ``func`` once what was queued before for profile ``name`` is done."""
        lock = self._locks.setdefault(name, defer.DeferredLock())
        return lock.run(lambda: defer.ensureDeferred(func()))

    @staticmethod
    def _own(client: Client) -> jabber_jid.JID:
        """The full JID the profile's stream is bound to."""
        return getattr(client, "bound_jid", None) or client.jid

    # connection

    def stream_started(self, client: Client) -> None:
        """Ask the account's server whether it gives stanza-ids, before any message of
        the stream is read."""
        name = client.profile.name
        self.stanza_ids[name] = False
        d = self._serial(name, lambda: self._stream_ready(client))
        d.addErrback(lambda f: log.failure("profile {profile}: stanza-id support not "
                                           "checked", f, profile=name))

    async def _check_server(self, client: Client) -> None:
        name = client.profile.name
        disco = self.host.plugins["XEP-0030"]
        account = client.jid.userhostJID()
        try:
            info = await disco.get_info(client, account, timeout=SERVER_CHECK_TIMEOUT)
        except Exception as e:
            log.warn("profile {profile}: the account's features are unknown ({error}): "
                     "stanza-ids of received messages are not trusted", profile=name,
                     error=str(e) or type(e).__name__)
            return
        self.stanza_ids[name] = NS_SID in info.features
        log.info("profile {profile}: the server {gives} stanza-ids", profile=name,
                 gives="gives" if self.stanza_ids[name] else "does not give")

    async def _stream_ready(self, client: Client) -> None:
        await self._check_server(client)
        try:
            await self.host.trigger.async_point(TRIGGER_STREAM, client)
        except Exception:
            log.failure("profile {profile}: a {point} callback failed",
                        profile=client.profile.name, point=TRIGGER_STREAM)

    def profile_disconnected(self, client: Client) -> None:
        self.stanza_ids.pop(client.profile.name, None)

    # receiving

    def on_message(self, client: Client, element: domish.Element) -> None:
        """A message received on ``client``'s stream: read, then stored in turn."""
        name = client.profile.name
        received = datetime.fromtimestamp(self.host.reactor.seconds(), UTC)
        d = self._serial(name, lambda: self.receive_element(client, element, received,
                                                            "live"))
        d.addErrback(lambda f: log.failure("profile {profile}: message not stored", f,
                                           profile=name))

    async def receive_element(self, client: Client, element: domish.Element,
                              received: datetime, via: str) -> None:
        """Read the ``<message/>`` ``element`` and store it (unless a callback of
        :data:`TRIGGER_RECEIVED` claims it); hostile content is logged.

        Called in the profile's queue: by this plugin for what the stream brings, by
        :data:`TRIGGER_RECEIVED` callbacks for messages they unwrap (carbons).

        :param via: how it came, for the ``message_new`` signal (``live``, ``carbon``)
        """
        name = client.profile.name
        type_ = element.getAttribute("type") or "normal"
        if type_ == "error":
            log.info("profile {profile}: error message from {sender} not stored",
                     profile=name, sender=(element.getAttribute("from") or "")[:200])
            return
        if type_ == "groupchat":
            return  # group chats' own plugin
        try:
            read = read_message(element, self.max_body)
        except InvalidMessage as e:
            log.warn("profile {profile}: message ignored: {reason}", profile=name,
                     reason=str(e))
            return
        if read.type not in TYPES:
            # RFC 6121 §5.2.2: an unknown type is read as normal
            read.type = "normal"
        await self._receive(client, element, read, received, via)

    def _trusted_stanza_id(self, client: Client, read: ReadMessage) -> str | None:
        name = client.profile.name
        account = client.jid.userhost()
        mine = [value for by, value in read.stanza_ids if by == account]
        if not mine:
            return None
        if not self.stanza_ids.get(name):
            log.warn("profile {profile}: a stanza-id of the account in a message from "
                     "{sender} ignored: the server gives none, so anyone may have "
                     "written it", profile=name, sender=read.sender)
            return None
        if len(mine) > 1:
            log.warn("profile {profile}: {count} stanza-ids of the account in a message "
                     "from {sender}: none is trusted", profile=name, count=len(mine),
                     sender=read.sender)
            return None
        return mine[0]

    async def _receive(self, client: Client, element: domish.Element, read: ReadMessage,
                       received: datetime, via: str) -> None:
        name = client.profile.name
        own = self._own(client)
        sender = read.sender or own.userhostJID()
        recipient = read.recipient or own
        outgoing = sender.userhost() == own.userhost() and (
            recipient.userhost() != own.userhost())
        if read.dropped or read.truncated:
            log.warn("profile {profile}: message from {sender} read partly: {what}",
                     profile=name, sender=sender.full(),
                     what=", ".join(read.dropped + (
                         [f"texts cut at {self.max_body} characters"]
                         if read.truncated else [])))
        message = None
        if read.bodies or read.subjects:
            timestamp = min(read.delay, received) if read.delay else received
            extra: dict[str, Any] = {"truncated": True} if read.truncated else {}
            if read.delay is not None:
                extra["delayed"] = True
            message = HistoryMessage(
                uid=str(uuid.uuid4()), source=sender.userhost(),
                source_resource=sender.resource, dest=recipient.userhost(),
                dest_resource=recipient.resource,
                conversation=(recipient if outgoing else sender).userhost(),
                timestamp=timestamp, received=received, type=read.type,
                direction="out" if outgoing else "in", bodies=read.bodies,
                subjects=read.subjects, thread=read.thread,
                thread_parent=read.thread_parent,
                stanza_id=self._trusted_stanza_id(client, read),
                origin_id=read.origin_id, message_id=read.message_id, extra=extra)
        event = MessageReceived(element, read, message)
        if not await self.host.trigger.async_point(TRIGGER_RECEIVED, client, event):
            return
        if event.message is None:
            return
        await self._store(client, event.message, via)

    async def _store(self, client: Client, message: HistoryMessage, via: str
                     ) -> HistoryMessage:
        name = client.profile.name
        result = await self.storage.add(name, message)
        if not result.stored:
            log.debug("profile {profile}: message {uid} stored already", profile=name,
                      uid=result.message.uid)
            return result.message
        try:
            await self.host.trigger.async_point(TRIGGER_STORED, client, result.message)
        except Exception:
            log.failure("profile {profile}: a {point} callback failed", profile=name,
                        point=TRIGGER_STORED)
        self.host.bridge.emit_signal(MESSAGE_NEW_SIGNAL, profile=name, via=via,
                                     message=result.message.to_dict())
        return result.message

    # sending

    async def send(self, client: Client, to: str, body: str | dict[str, str] | None,
                   subject: str | dict[str, str] | None = None, thread: str | None = None,
                   type_: str | None = None, extra: dict[str, Any] | None = None
                   ) -> HistoryMessage:
        """Send a message, and store it.

        :param body: the text, or texts by language (``""``: no language said)
        :param type_: ``chat`` (default), ``normal`` or ``headline``
        :param extra: kept with the message in the history (JSON), not sent
        :raise InvalidMessage: a parameter is invalid; the message says which
        :raise MessageCancelled: a plugin cancelled it (nothing was sent)
        """
        recipient = jid_or_none(to) if isinstance(to, str) else None
        if recipient is None:
            raise InvalidMessage(f"invalid recipient {str(to)[:100]!r}: give a JID, such "
                                 "as contact@example.org")
        bodies = checked_texts(body, "body", self.max_body)
        subjects = checked_texts(subject, "subject", self.max_body)
        if not bodies and not subjects:
            raise InvalidMessage("nothing to send: give a body (or a subject)")
        type_ = type_ or "chat"
        if type_ not in TYPES:
            raise InvalidMessage(f"unknown message type {str(type_)[:20]!r}: use one of "
                                 f"{', '.join(TYPES)}")
        if thread is not None and (not isinstance(thread, str) or not thread or len(
                thread) > MAX_ID or NOT_XML_CHAR.search(thread)):
            raise InvalidMessage(f"invalid thread: 1 to {MAX_ID} characters XML allows")
        extra = _checked_extra(extra)
        own = self._own(client)
        now = datetime.fromtimestamp(self.host.reactor.seconds(), UTC)
        message_id = str(uuid.uuid4())
        message = HistoryMessage(
            uid=str(uuid.uuid4()), source=own.userhost(), source_resource=own.resource,
            dest=recipient.userhost(), dest_resource=recipient.resource,
            conversation=recipient.userhost(), timestamp=now, received=now, type=type_,
            direction="out", bodies=bodies, subjects=subjects, thread=thread,
            origin_id=message_id, message_id=message_id, extra=extra)
        event = MessageSending(message, build_message(recipient, type_, message_id,
                                                      bodies, subjects, thread))
        if not await self.host.trigger.async_point(TRIGGER_SEND, client, event):
            raise MessageCancelled(f"the message to {recipient.full()} was not sent: "
                                   + (event.reason or "a plugin cancelled it"))

        async def send_and_store() -> HistoryMessage:
            client.send(event.element)
            return await self._store(client, event.message, "sent")

        return await self._serial(client.profile.name, send_and_store)

    # the history

    async def get(self, profile: str, uid: str) -> HistoryMessage:
        """The stored message ``uid``.

        :raise NotFound: no such profile or message
        """
        if not isinstance(uid, str) or not uid or len(uid) > 64:
            raise NotFound(f"no message {str(uid)[:100]!r}")
        return await self.storage.get(profile, uid)

    async def history(self, profile: str, filter_: HistoryFilter) -> HistoryPage:
        """A page of the history (see :class:`HistoryFilter`).

        :raise NotFound: no such profile, or a cursor naming no message of it
        """
        return await self.storage.get_history(profile, filter_)


def _checked_extra(extra: dict[str, Any] | None) -> dict[str, Any]:
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise InvalidMessage("extra must be an object")
    try:
        size = len(json.dumps(extra, ensure_ascii=False))
    except (TypeError, ValueError):
        raise InvalidMessage("extra must be JSON (objects, arrays, texts, numbers)"
                             ) from None
    if size > MAX_EXTRA:
        raise InvalidMessage(f"extra is {size} characters long as JSON, more than "
                             f"{MAX_EXTRA}")
    return dict(extra)


def history_filter(with_jid: str | None = None, limit: int = 50, before: str | None = None,
                   after: str | None = None, since: str | None = None,
                   until: str | None = None, search: str | None = None,
                   types: list[str] | None = None, order: str = "desc") -> HistoryFilter:
    """A :class:`HistoryFilter` from what a frontend gave.

    :raise InvalidMessage: a value is invalid; the message says which
    """
    bare = None
    if with_jid is not None:
        parsed = jid_or_none(with_jid)
        if parsed is None:
            raise InvalidMessage(f"invalid JID {with_jid[:100]!r} for with_jid")
        bare = parsed.userhost()
    if isinstance(limit, bool) or not isinstance(limit, int) or not (
            1 <= limit <= MAX_LIMIT):
        raise InvalidMessage(f"limit must be from 1 to {MAX_LIMIT}")
    times = []
    for name, value in (("since", since), ("until", until)):
        stamp = None
        if value is not None:
            try:
                stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
                if stamp.tzinfo is None:
                    stamp = stamp.replace(tzinfo=UTC)
                # out of range once in UTC (year 1 in a zone east of it...)
                stamp = stamp.astimezone(UTC)
            except (ValueError, OverflowError):
                raise InvalidMessage(f"{name}: {value[:40]!r} is no ISO 8601 date "
                                     "(2026-12-08, 2026-12-08T10:00:00+01:00)") from None
        times.append(stamp)
    for name, value in (("before", before), ("after", after)):
        if value is not None and (not value or len(value) > 64):
            raise NotFound(f"{name}: no message {value[:100]!r}")
    words: tuple[str, ...] = ()
    if search is not None:
        if len(search) > 1000:
            raise InvalidMessage("search: at most 1000 characters")
        words = tuple(search.split())
        if not words:
            raise InvalidMessage("search: give at least one word")
    if types is not None:
        unknown = [t for t in types if t not in TYPES]
        if unknown:
            raise InvalidMessage(f"unknown message type {unknown[0][:20]!r}: use "
                                 f"{', '.join(TYPES)}")
    if order not in ("desc", "asc"):
        raise InvalidMessage("order is desc (newest first) or asc")
    return HistoryFilter(bare, limit, before, after, times[0], times[1], words,
                         tuple(types) if types is not None else None, order)
