"""The storage's own threads, each call run by the thread that was idle last.

A :class:`~twisted.python.threadpool.ThreadPool` tells the reactor a call's result
before its thread is idle again: the reactor's next call, made at once (a frontend's
next request, the next page of a sync), finds no idle thread and wakes another one.
Calls made one after the other then go round every thread of the pool, each woken
cold and each with its own database connection: a third of the time of a short read
went there.  Here a thread first makes itself idle (on top of the idle ones) and only
then hands the result over, so that calls made one after the other stay on one warm
thread, and the others only serve calls made at the same time.
"""

import threading
from collections import deque
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

from libervia.backend.core.log import getLogger

log = getLogger(__name__)

#: a unit of work: run in a thread, it returns what delivers its result (called by
#: the same thread, once it is idle again)
Work = Callable[[], Callable[[], None]]


class WorkerThreads:
    """At most ``size`` threads (started when needed) running :data:`Work` items.

    :param size: threads at most; work beyond waits for a thread, first in first out
    :param name: prefix of the threads' names
    """

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._lock = threading.Lock()
        #: idle threads' queues, the last one idle on top
        self._idle: list[SimpleQueue] = []
        self._pending: deque[Work] = deque()
        self._threads: list[tuple[threading.Thread, SimpleQueue]] = []
        self._stopped = False

    def submit(self, work: Work) -> None:
        """Run ``work`` in a thread: the one idle last, a new one, or the first one
        becoming idle."""
        with self._lock:
            if self._stopped:
                raise RuntimeError(f"threads {self.name!r} are stopped")
            if self._idle:
                inbox = self._idle.pop()
            elif len(self._threads) < self.size:
                inbox = SimpleQueue()
                # daemon threads: a storage that was never stopped (a crash, a failed
                # test) must not keep the process alive
                thread = threading.Thread(target=self._run, args=(inbox,), daemon=True,
                                          name=f"{self.name}-{len(self._threads)}")
                self._threads.append((thread, inbox))
                thread.start()
            else:
                self._pending.append(work)
                return
        inbox.put(work)

    def _run(self, inbox: SimpleQueue) -> None:
        work: Work | None = inbox.get()
        while work is not None:
            deliver = _guarded(work)
            with self._lock:
                work = self._pending.popleft() if self._pending else None
                if work is None:
                    self._idle.append(inbox)
            if deliver is not None:
                # a thread must outlive anything its work does: it is idle already
                _guarded(deliver)
            if work is None:
                work = inbox.get()

    def stop(self) -> None:
        """Stop the threads once their work is done (call when nothing is pending)."""
        with self._lock:
            self._stopped = True
            threads, self._threads = self._threads, []
            self._idle.clear()
        for __, inbox in threads:
            inbox.put(None)
        current = threading.current_thread()
        for thread, __ in threads:
            if thread is not current:
                thread.join()


def _guarded(call: Callable[[], Any]) -> Any:
    """``call()``, or None (logged) if it raises: work items handle their own errors,
    this is the last resort that keeps the thread alive."""
    try:
        return call()
    except BaseException:
        log.failure("storage thread: a work item raised")
        return None
