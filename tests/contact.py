"""A contact for the roster and presence tests: an independent client (slixmpp) in a
thread with its own event loop.

Its methods block until done (call them from a thread that is not the reactor's: the
integration tests use ``threads.deferToThread``, the end-to-end tests call them as they
are).  It records the presences it receives and answers no subscription request by
itself: the test decides.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import slixmpp

from tests.pubsub_support import TIMEOUT, log_in


class Contact:
    """The slixmpp session of ``user`` on the test server ``info``."""

    def __init__(self, info: Any, user: Any) -> None:
        self.info = info
        self.jid = user.jid
        self.loop = asyncio.new_event_loop()
        self.xmpp = slixmpp.ClientXMPP(user.jid, user.password)
        self.xmpp.loop = self.loop
        self.xmpp.ca_certs = str(info.ca_file)
        self.xmpp.auto_authorize = None
        self.xmpp.auto_subscribe = False
        #: (type, from (full JID), show, status) of each presence received, in order
        self.presences: list[tuple[str, str, str, str]] = []
        self.xmpp.add_event_handler("presence", self._on_presence)
        #: (from (full JID), body, origin-id) of each message with a body received
        self.messages: list[tuple[str, str, str | None]] = []
        self.xmpp.add_event_handler("message", self._on_message)
        self._thread: threading.Thread | None = None

    def _on_presence(self, presence: Any) -> None:
        # the type attribute as sent: slixmpp's presence["type"] gives the show instead
        self.presences.append((presence.xml.get("type") or "available",
                               presence["from"].full, presence["show"],
                               presence["status"]))

    def _on_message(self, message: Any) -> None:
        if message["body"]:
            origin = message.xml.find("{urn:xmpp:sid:0}origin-id")
            self.messages.append((message["from"].full, message["body"],
                                  origin.get("id") if origin is not None else None))

    def send_message(self, to: str, body: str) -> None:
        """Send a chat message."""
        self.do(self.xmpp.send_message, mto=to, mbody=body, mtype="chat")

    def start(self) -> None:
        """Log in, get the roster, send the initial presence."""
        logged_in: concurrent.futures.Future = concurrent.futures.Future()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self._log_in())
            except BaseException as e:
                logged_in.set_exception(e)
                return
            logged_in.set_result(None)
            self.loop.run_forever()

        self._thread = threading.Thread(target=serve, name="contact", daemon=True)
        self._thread.start()
        logged_in.result(TIMEOUT * 2)

    async def _log_in(self) -> None:
        await log_in(self.xmpp, self.info, "the contact")
        await self.xmpp.get_roster()
        self.xmpp.send_presence()

    def do(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """``func(*args, **kwargs)`` in the contact's loop (awaited if it is a
        coroutine or a future); its result."""
        async def body() -> Any:
            result = func(*args, **kwargs)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(body(), self.loop).result(TIMEOUT)

    def send_presence(self, **kwargs: Any) -> None:
        """Send a presence (slixmpp's ``send_presence`` arguments: ``pto``, ``ptype``,
        ``pshow``, ``pstatus``)."""
        self.do(self.xmpp.send_presence, **kwargs)

    def subscription(self, owner: str) -> str:
        """The contact's subscription with ``owner``, as its roster says."""
        return self.do(lambda: self.xmpp.client_roster[owner]["subscription"])

    def presence_from(self, jid: str, type_: str = "available", show: str = "") -> bool:
        """A presence of ``type_`` (and ``show``) came from ``jid`` (bare)."""
        return any(t == type_ and f.split("/")[0] == jid and s == show
                   for t, f, s, __ in list(self.presences))

    def close(self) -> None:
        """Log out and stop the thread."""
        if self._thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(
                asyncio.wait_for(self.xmpp.disconnect(), TIMEOUT), self.loop
            ).result(TIMEOUT * 2)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(TIMEOUT)
