"""Group commit: writes queued while one is in flight share the next transaction.

Notifications of many nodes (of many profiles) each make a small write of their own;
one transaction each is what limits how many the storage takes a second (SQLite has
one writer, each commit has a fixed cost, each call a thread crossing).
:class:`GroupCommit` runs the first write at once, as a call of its own; writes
submitted while it is in flight wait, and all of them then go in the next transaction.
Under load, a transaction holds every write queued during the previous one; alone, a
write is never delayed.

What a write submitted here is guaranteed, the same as in a transaction of its own:

* it is committed whole or not at all, and its Deferred fires only once it is
  committed (with its own result), or with its own error;
* writes are applied in the order they were submitted (a node's items stay in order);
* a member that fails does not take the others down: when a group transaction fails
  with an error raised by its statements (a constraint, a node deleted meanwhile),
  nothing of it was committed, and each of its members is run again alone, in the
  order they came: the others are committed, the failing one gets its own error;
* when the database is unavailable (:class:`~.runner.StorageError`), every member of
  the transaction fails with that error: none of them is run again, since a commit
  that lost its connection may have been done.
"""

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session
from twisted.internet import defer
from twisted.python.failure import Failure

from libervia.backend.core.log import getLogger
from libervia.backend.memory.storage.runner import StorageError, StorageRunner

log = getLogger(__name__)

#: ``thd_group(session, members)``: run in a storage thread, it applies each member's
#: write (its arguments) in order, in the session's transaction, and returns one result
#: per member
GroupFunction = Callable[[Session, list[tuple[Any, ...]]], list[Any]]


@dataclass
class Member:
    """A write waiting for its transaction."""

    args: tuple[Any, ...]
    #: what it weighs (rows): a transaction takes members up to the group's limit
    size: int
    done: defer.Deferred = field(default_factory=defer.Deferred)
    #: the tables this write may change (None: any)
    tables: frozenset[str] | None = None


class GroupCommit:
    """Writes of one kind, grouped in transactions (see the module documentation).

    :param runner: the storage's runner
    :param name: short name of the group transactions, in logs and timings
    :param thd_group: applies a list of members' writes in one transaction
    :param max_size: a transaction takes members until their sizes reach this (at
        least one member, whatever its size)
    """

    def __init__(self, runner: StorageRunner, name: str, thd_group: GroupFunction,
                 max_size: int) -> None:
        self.runner = runner
        self.name = name
        self.thd_group = thd_group
        self.max_size = max_size
        self._queue: deque[Member] = deque()
        self._writing = False
        #: members per transaction (for the statistics: how much grouping there was)
        self.transactions = 0
        self.members = 0

    def submit(self, *args: Any, size: int = 1,
               tables: frozenset[str] | None = None) -> defer.Deferred:
        """Queue a write (its arguments for ``thd_group``).

        :param size: its weight (rows written) against ``max_size``
        :param tables: the tables it may change (None: any; see
            :meth:`~.runner.StorageRunner.add_write_listener`)
        :return: Deferred fired with its result once committed
        """
        member = Member(args, size, tables=tables)
        self._queue.append(member)
        if not self._writing:
            self._writing = True
            self._next()
        return member.done

    def _take(self) -> list[Member]:
        batch = [self._queue.popleft()]
        size = batch[0].size
        while self._queue and size + self._queue[0].size <= self.max_size:
            member = self._queue.popleft()
            size += member.size
            batch.append(member)
        return batch

    def _next(self, __: Any = None) -> None:
        if not self._queue:
            self._writing = False
            return
        batch = self._take()
        self.transactions += 1
        self.members += len(batch)
        d = self._run(batch)
        d.addCallback(self._delivered, batch)
        d.addErrback(self._failed, batch)
        d.addErrback(self._lost, batch)
        d.addBoth(self._next)

    def _run(self, batch: list[Member]) -> defer.Deferred:
        tables: frozenset[str] | None = frozenset()
        for member in batch:
            tables = None if tables is None or member.tables is None else (
                tables | member.tables)
        return self.runner.run_in_session(self.name, self.thd_group,
                                          [m.args for m in batch], tables=tables)

    @staticmethod
    def _delivered(results: list[Any], batch: list[Member]) -> None:
        for member, result in zip(batch, results, strict=True):
            if not member.done.called:
                member.done.callback(result)

    def _failed(self, failure: Failure, batch: list[Member]) -> Any:
        if len(batch) == 1 or failure.check(StorageError):
            for member in batch:
                if not member.done.called:
                    member.done.errback(failure)
            return None
        log.debug("{name}: a transaction of {n} writes failed ({error}); each is "
                  "written alone", name=self.name, n=len(batch),
                  error=failure.getErrorMessage())
        return defer.ensureDeferred(self._one_by_one(batch))

    async def _one_by_one(self, batch: list[Member]) -> None:
        for member in batch:
            try:
                results = await self._run([member])
            except Exception:
                if not member.done.called:
                    member.done.errback(Failure())
            else:
                self._delivered(results, [member])

    @staticmethod
    def _lost(failure: Failure, batch: list[Member]) -> None:
        # a bug in the delivery itself: the members must not wait forever
        log.failure("group commit: delivering a transaction's results failed", failure)
        for member in batch:
            if not member.done.called:
                member.done.errback(failure)
