"""What the storage remembers between reads, as long as nothing is written.

The storage is its database's only writer (one backend per database), and every write
is a call of its runner: a value read while no write was queued or running stays true
until the next write is queued.  :class:`ReadMemo` keeps such values; the runner tells
it when each call that may write is queued and when it has finished (it is a write
listener of :class:`~.runner.StorageRunner`), and it forgets everything at both.

A read remembers what it found only if no write was queued, running or finished around
its queries (:meth:`ReadMemo.epoch` before them, :meth:`ReadMemo.remember` after): what
is remembered is always what the database holds.
"""

import threading
from typing import Any

#: what :meth:`ReadMemo.get` and :meth:`ReadMemo.peek` give for a key not remembered
MISSING: Any = object()


class ReadMemo:
    """Values found by reads, by key, forgotten whenever a write is queued or finishes.

    Called from the reactor thread (writes, :meth:`peek`) and from the storage's
    threads (reads): a lock guards the state.

    :param limit: values kept at most; beyond, all are forgotten (a memo speeds up
        the reads made again and again, it is not a copy of the database)
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._epoch = 0
        self._writing = 0
        self._limit = limit
        self._values: dict[Any, Any] = {}

    def write_started(self) -> None:
        with self._lock:
            self._epoch += 1
            self._writing += 1
            self._values.clear()

    def write_ended(self) -> None:
        with self._lock:
            self._epoch += 1
            self._writing -= 1
            self._values.clear()

    def epoch(self) -> int:
        """The current epoch: take it before a read's first query."""
        with self._lock:
            return self._epoch

    def get(self, key: Any) -> tuple[int, Any]:
        """``(epoch, value)``: the epoch, and the value remembered for ``key`` (or
        :data:`MISSING`), in one step; call before the read's first query."""
        with self._lock:
            if self._writing:
                return self._epoch, MISSING
            return self._epoch, self._values.get(key, MISSING)

    def peek(self, key: Any) -> Any:
        """The value remembered for ``key``, or :data:`MISSING` (also while a write
        is on its way)."""
        with self._lock:
            if self._writing:
                return MISSING
            return self._values.get(key, MISSING)

    def unchanged(self, epoch: int) -> bool:
        """Whether nothing was written, or is being written, since ``epoch``."""
        with self._lock:
            return epoch == self._epoch and not self._writing

    def remember(self, epoch: int, key: Any, value: Any) -> None:
        """Keep ``value`` for ``key`` if nothing was written since ``epoch``."""
        with self._lock:
            if epoch == self._epoch and not self._writing:
                if len(self._values) >= self._limit:
                    self._values.clear()
                self._values[key] = value
