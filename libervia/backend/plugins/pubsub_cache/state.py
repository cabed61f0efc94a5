"""What the pubsub cache knows at run time about the nodes it keeps.

The bottom of the package: every other module of it reads or changes this state, and
this module imports none of them.  One :class:`CacheState` per plugin instance holds

* which nodes were checked against their service since their profile connected (only
  those are served),
* which nodes are being rewritten (synchronised or verified), with the events that came
  meanwhile,
* which nodes had an event the database could not store,
* a lock per node serialising the writes of its items,
* the analyses in progress, and the background work the plugin started.

:class:`~libervia.backend.memory.sqla_mapping.PubsubNode` rows are the persistent half
of this state: a node's sync state, analyser and service traits are stored with it.
"""

from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.internet import defer
from twisted.words.protocols.jabber import jid as jabber_jid

from libervia.backend.core.exceptions import BackendError
from libervia.backend.core.interfaces import Client
from libervia.backend.core.log import getLogger

log = getLogger(__name__)

#: an event of a node waiting for the end of a rewrite: (kind, data); kind is one of
#: "items", "retract", "purge", "delete", "configuration"
PendingEvent = tuple[str, Any]


class CacheError(BackendError):
    """A cache operation can't be done; the message says why."""


def service_key(service: jabber_jid.JID) -> str:
    """How a service is stored: its bare JID, or its domain for a component."""
    return service.userhost() if service.user else service.host


def stream_of(client: Client) -> Any:
    """The stream a client has open now (a new one at each connection): events come
    through it, so what is checked on one stream holds only while it lasts, however it
    ends (lost connection, stream error, server shutdown, backend suspended)."""
    return getattr(client, "xmlstream", None)


class CacheState:
    """The run-time state of the cache, shared by the modules of the package."""

    def __init__(self) -> None:
        #: node ids whose items were compared with the service (or synchronised), with
        #: the stream that was open when the check started: a node is served only
        #: while that stream is the client's, since events are lost once it ends
        self.verified: dict[int, Any] = {}
        #: node ids being rewritten, with the events received meanwhile
        self.rewriting: dict[int, list[PendingEvent]] = {}
        #: (service, node) whose events could not be stored: not served until checked
        self.missed: set[tuple[str, str]] = set()
        #: analyses in progress by (profile, service, node), so that one runs at a time
        self.analysing: dict[tuple[str, str, str], defer.Deferred] = {}
        self._node_locks: dict[int, defer.DeferredLock] = {}
        #: Deferreds of background work, so that tests and shutdown can wait for them
        self._background: set[defer.Deferred] = set()
        #: last time stamp given to a cached item, so that stamps always grow
        self._last_stamp = datetime.min.replace(tzinfo=UTC)

    def mark_verified(self, node_id: int, stream: Any) -> None:
        """The node equals its service as of ``stream`` (see :func:`stream_of`)."""
        self.verified[node_id] = stream

    def unverify(self, node_id: int) -> None:
        """The node may differ from its service: not served until checked again."""
        self.verified.pop(node_id, None)

    def is_servable(self, node_id: int, service: str, name: str, client: Client) -> bool:
        """Whether a COMPLETED node may be answered from the database now: checked on
        the client's current stream, which is still open, and nothing pending."""
        return (getattr(client, "is_connected", True)
                and node_id in self.verified
                and self.verified[node_id] is stream_of(client)
                and node_id not in self.rewriting
                and (service, name) not in self.missed)

    def defer_event(self, node_id: int, kind: str, data: Any) -> bool:
        """Keep an event of a node being rewritten for later; False if it is not."""
        pending = self.rewriting.get(node_id)
        if pending is None:
            return False
        pending.append((kind, data))
        return True

    def lock(self, node_id: int) -> "Locked":
        """``async with state.lock(node_id)``: the writes of a node's items, one at a
        time."""
        lock = self._node_locks.get(node_id)
        if lock is None:
            lock = self._node_locks[node_id] = defer.DeferredLock()
        return Locked(lock)

    def forget_lock(self, node_id: int) -> None:
        """The node is gone: its lock is not needed any more."""
        self._node_locks.pop(node_id, None)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> defer.Deferred:
        """Run ``coroutine`` in the background; its failure is logged."""
        d = defer.ensureDeferred(coroutine)
        self._background.add(d)

        def done(result: Any) -> Any:
            self._background.discard(d)
            return result

        d.addBoth(done)
        d.addErrback(lambda f: log.failure("pubsub cache background task failed", f))
        return d

    async def wait_background(self) -> None:
        """Wait until every background task has ended (those they start too)."""
        while self._background:
            await defer.DeferredList(list(self._background), consumeErrors=True)

    def stamp(self) -> datetime:
        """Now, but always later than the previous stamp given (order of events)."""
        now = datetime.now(UTC)
        if now <= self._last_stamp:
            now = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = now
        return now


class Locked:
    """``async with Locked(lock)`` for a DeferredLock."""

    def __init__(self, lock: defer.DeferredLock) -> None:
        self.lock = lock

    async def __aenter__(self) -> None:
        await self.lock.acquire()

    async def __aexit__(self, *exc: Any) -> None:
        self.lock.release()
