"""The runner: the storage's threads, transactions, retries and timings.

Every call of the storage is a function named ``thd_*`` run in one of the runner's
*own* threads (:class:`~.threads.WorkerThreads`, distinct from the
reactor's default pool, so that slow DNS look-ups or other blocking calls never queue
behind database work, and the other way round).  It receives what it works in first:
an ORM session (:meth:`StorageRunner.run_in_session`), a Core connection
(:meth:`~StorageRunner.run_in_connection`) or a driver cursor for the few reads made
for every request (:meth:`~StorageRunner.run_in_cursor`); the transaction is committed
when it returns, rolled back if it raises.  The Deferred returned to the reactor fires
with what it returned.

Each call carries a short name (``"get_items"``, ``"cache_pubsub_items"``...) used in
the debug log and in :attr:`StorageRunner.timings`, as Synapse's
``runInteraction("name", fn)``.  A call failing with a transient error (SQLite busy or
locked; PostgreSQL serialization failure or deadlock) is retried, in a new
transaction, up to :attr:`StorageRunner.max_attempts` times with a short back-off.

Nothing from SQLAlchemy's result API (``Result``, ``Row``) crosses back to the reactor
thread: the ``thd_*`` functions return plain values or mapped objects, detached from
their (closed) session with all their columns loaded.

The domain components (:mod:`.profiles`, :mod:`.pubsub`, :mod:`.search`) only call
the runner; they know nothing of threads or retries.
"""

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, Row
from sqlalchemy.engine import URL, Result
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from twisted.internet import defer
from twisted.python.failure import Failure

from libervia.backend.core.exceptions import BackendError
from libervia.backend.core.log import getLogger
from libervia.backend.memory import schema
from libervia.backend.memory.engines import (
    WRITE_OPTION,
    DatabaseEngine,
    create_database_engine,
)
from libervia.backend.memory.storage.threads import WorkerThreads

log = getLogger(__name__)

T = TypeVar("T")

#: a statement compiled for one dialect: SQL text, positional parameter names (None
#: for a dialect with named parameters), values of the parameters the compiler added
#: itself (e.g. SQLite's ``LIMIT -1``)
Compiled = tuple[str, tuple[str, ...] | None, dict[str, Any]]


class StorageError(BackendError):
    """The storage can't do what was asked (for instance: it is not running)."""


class StorageUnavailable(StorageError):
    """The database can't be reached: its server is stopped, the connection was lost.

    The call fails at once rather than waiting; the next calls reconnect by themselves
    once the database is back (connections are checked before use).
    """


@dataclass
class CallStats:
    """Timings of one kind of storage call, in seconds."""

    calls: int = 0
    total: float = 0.0
    max: float = 0.0
    retries: int = 0


class WriteListener(Protocol):
    """Told when a call that may write is queued and when it has finished (see
    :meth:`StorageRunner.add_write_listener`); called from the reactor thread."""

    def write_started(self) -> None: ...

    def write_ended(self) -> None: ...


class StorageRunner:
    """The storage's thread pool and the calls run in it; see the module documentation.

    :param url: SQLAlchemy URL of the database (see
        :func:`~libervia.backend.memory.engines.database_url`)
    :param threads: size of the thread pool (and of the connection pool); default
        depends on the engine
    :param reactor: reactor to use (injected by tests)
    :param max_attempts: attempts of a call failing with transient errors
    :param sleep: how a thread waits between two attempts (injected by tests)
    :param script_location: folder of the Alembic scripts (tests use a modified copy)
    """

    #: first back-off delay, doubled at each new attempt (plus jitter)
    retry_delay = 0.02
    max_retry_delay = 1.0

    def __init__(
        self,
        url: str | URL,
        *,
        threads: int | None = None,
        reactor: Any = None,
        max_attempts: int = 6,
        sleep: Callable[[float], None] = time.sleep,
        script_location: Path | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.db_engine: DatabaseEngine = create_database_engine(url)
        self.threads = threads or self.db_engine.default_threads
        self.max_attempts = max_attempts
        self.script_location = script_location
        self._sleep = sleep
        self.sa_engine: Engine | None = None
        self._sessions: dict[bool, sessionmaker[Session]] = {}
        self._pool: WorkerThreads | None = None
        self._accepting = False
        self._in_flight = 0
        self._idle_waiters: list[defer.Deferred] = []
        #: statistics by call name
        self.timings: dict[str, CallStats] = {}
        #: listeners, each with the tables it is told about (None: every table)
        self._write_listeners: list[tuple[WriteListener, frozenset[str] | None]] = []
        #: each storage thread's own connection for the hottest reads
        self._local = threading.local()
        self._read_connections: set[Any] = set()
        self._read_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<StorageRunner {self.db_engine!r}>"

    def add_write_listener(self, listener: WriteListener,
                           tables: frozenset[str] | None = None) -> None:
        """Tell ``listener`` when each call that may write is queued and when it has
        finished (its transaction committed or rolled back).

        For what a component remembers between reads as long as nothing is written
        (see :mod:`.memo`): the storage is its database's only writer, so a call of
        the runner is the only way the data can change, and it can change only between
        these two moments.

        :param tables: only tell of the calls that may write one of these tables (a
            call that does not say which tables it writes is told to every listener)
        """
        self._write_listeners.append((listener, tables))

    def _listeners(self, tables: frozenset[str] | None) -> list[WriteListener]:
        """The write listeners to tell of a call writing ``tables`` (None: any)."""
        return [listener for listener, watched in self._write_listeners
                if tables is None or watched is None or tables & watched]

    # life cycle

    @property
    def running(self) -> bool:
        return self._accepting

    def start(self) -> defer.Deferred:
        """Start the thread pool and open the database (folder, permissions, engine)."""
        if self._pool is not None:
            return defer.fail(StorageError("the storage is already started"))
        # daemon threads: a storage that was never stopped (a crash, a failed test)
        # must not keep the process alive; an interrupted transaction is rolled back
        self._pool = WorkerThreads(self.threads, "storage")
        self._accepting = True
        d = self._call("open", self._thd_open)

        def failed(failure: Failure) -> defer.Deferred:
            # nothing may be left running: the caller won't call stop()
            return self.stop().addCallback(lambda __: failure)

        return d.addErrback(failed)

    def _thd_open(self) -> None:
        self.db_engine.prepare()
        self.sa_engine = self.db_engine.create_sa_engine(pool_size=self.threads)
        writer = self.sa_engine.execution_options(**{WRITE_OPTION: True})
        # expire_on_commit=False: objects stay readable once their session is closed
        self._sessions = {
            False: sessionmaker(self.sa_engine, expire_on_commit=False),
            True: sessionmaker(writer, expire_on_commit=False),
        }

    def stop(self) -> defer.Deferred:
        """Refuse new calls, wait for those in flight, then stop the threads."""
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self._accepting = False
        if self._pool is None:
            return
        if self._in_flight:
            waiter: defer.Deferred = defer.Deferred()
            self._idle_waiters.append(waiter)
            await waiter
        with self._read_lock:
            read_connections, self._read_connections = self._read_connections, set()
        for conn in read_connections:
            conn.close()
        if self.sa_engine is not None:
            self.sa_engine.dispose()
            self.sa_engine = None
        pool, self._pool = self._pool, None
        # every thread is idle: joining them is immediate
        pool.stop()

    def migrate(self, keep_backups: int = schema.KEEP_BACKUPS) -> defer.Deferred:
        """Create or upgrade the schema to the head revision.

        :return: Deferred fired with a :class:`~.schema.MigrationReport`
        :raise StartupError: see :func:`~.schema.thd_migrate`
        """
        def thd() -> schema.MigrationReport:
            assert self.sa_engine is not None
            with self.db_engine.migration_connection(self.sa_engine) as conn:
                return schema.thd_migrate(
                    conn, self.db_engine, self.script_location, keep_backups
                )

        return self._call("migrate", thd, retry=False)

    # running calls in the threads

    def run_in_session(
        self,
        name: str,
        thd_func: Callable[..., T],
        *args: Any,
        write: bool = True,
        tables: frozenset[str] | None = None,
        **kwargs: Any,
    ) -> defer.Deferred:
        """Run ``thd_func(session, *args, **kwargs)`` in a transaction, in a thread.

        Plugins with queries of their own use this too.  The transaction is committed
        when ``thd_func`` returns, rolled back if it raises.

        :param name: short name of the call, for logs and timings
        :param write: the transaction may write (on SQLite, it then takes the write
            lock at once: see :mod:`~libervia.backend.memory.engines`)
        :param tables: the only tables a writing call may change (default: any), so
            that what is remembered of the others stays (see
            :meth:`add_write_listener`)
        :return: Deferred fired with what ``thd_func`` returned
        """
        def thd() -> T:
            if not self._sessions:
                raise StorageError(f"storage call {name!r} made before start() finished")
            with self._sessions[write]() as session:
                with session.begin():
                    result = thd_func(session, *args, **kwargs)
                # objects leave the session here: its closing detaches them
                return result

        return self._call(name, thd, read_only=not write, tables=tables)

    def run_in_connection(
        self,
        name: str,
        thd_func: Callable[..., T],
        *args: Any,
        write: bool = True,
        **kwargs: Any,
    ) -> defer.Deferred:
        """Like :meth:`run_in_session`, with a Core connection instead of a session."""
        def thd() -> T:
            engine = self.sa_engine
            if engine is None:
                raise StorageError(f"storage call {name!r} made before start() finished")
            if write:
                engine = engine.execution_options(**{WRITE_OPTION: True})
            with engine.begin() as conn:
                return thd_func(conn, *args, **kwargs)

        return self._call(name, thd, read_only=not write)

    def run_in_cursor(self, name: str, thd_func: Callable[..., T], *args: Any
                      ) -> defer.Deferred:
        """Run ``thd_func(cursor, db_engine, dialect, *args)`` on a driver cursor.

        For the few reads made for every request (see
        :meth:`~.engines.DatabaseEngine.read_with_cursor`): ``thd_func`` runs statements
        compiled once (:func:`compiled`, :func:`execute`) on the driver's cursor, after
        ``db_engine.begin_read(cursor)`` if they must see the same data.  Reads only:
        the transaction is rolled back at the end.
        """
        def thd() -> T:
            engine = self.sa_engine
            if engine is None:
                raise StorageError(f"storage call {name!r} made before start() finished")
            conn = self._thd_read_connection(engine)
            try:
                return self.db_engine.read_with_cursor(
                    conn, engine.dialect, thd_func, self.db_engine, engine.dialect, *args)
            except DBAPIError as e:
                if e.connection_invalidated:
                    self._thd_drop_read_connection(conn)
                raise

        return self._call(name, thd, read_only=True)

    def _thd_read_connection(self, engine: Engine) -> Any:
        """This thread's own driver connection, for :meth:`run_in_cursor`.

        Taken from the pool once, then detached from it: checking a connection out of
        the pool and resetting it costs as much as the read itself.  Closed by
        :meth:`stop`.
        """
        conn = getattr(self._local, "connection", None)
        if conn is None:
            dbapi_error = engine.dialect.loaded_dbapi.Error
            try:
                pooled = engine.raw_connection()
            except dbapi_error as e:
                # the pool raises the driver's own error when it can't connect: wrapped
                # as a connection wraps it, it tells that the database is unavailable
                raise DBAPIError.instance(None, None, e, dbapi_error,
                                          connection_invalidated=True) from e
            pooled.detach()
            conn = self._local.connection = pooled.dbapi_connection
            with self._read_lock:
                self._read_connections.add(conn)
        return conn

    def _thd_drop_read_connection(self, conn: Any) -> None:
        self._local.connection = None
        with self._read_lock:
            self._read_connections.discard(conn)
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close
            log.debug("closing a broken read connection failed")

    def _call(
        self,
        name: str,
        thd: Callable[[], T],
        retry: bool = True,
        read_only: bool = False,
        tables: frozenset[str] | None = None,
    ) -> defer.Deferred:
        if not self._accepting or self._pool is None:
            return defer.fail(StorageError(
                f"storage call {name!r} refused: the storage is not running"
            ))
        d: defer.Deferred = defer.Deferred()
        self._in_flight += 1
        queued = time.monotonic()
        listeners = [] if read_only else self._listeners(tables)
        for listener in listeners:
            listener.write_started()

        def work() -> Callable[[], None]:
            try:
                outcome: tuple[bool, Any] = (
                    True, self._thd_retried(name, thd, retry, read_only))
            except BaseException:
                outcome = (False, Failure())
            return lambda: self.reactor.callFromThread(
                self._finished, name, d, queued, listeners, *outcome)

        self._pool.submit(work)
        return d

    def _retryable(self, error: DBAPIError, read_only: bool) -> bool:
        if self.db_engine.is_transient(error):
            return True
        # a connection lost during a read-only transaction: nothing was changed, a new
        # connection can try again (a write may have been committed: not retried)
        return read_only and error.connection_invalidated

    def _thd_retried(
        self, name: str, thd: Callable[[], T], retry: bool, read_only: bool
    ) -> tuple[T, int, float]:
        attempt = 0
        while True:
            attempt += 1
            start = time.monotonic()
            try:
                result = thd()
            except DBAPIError as e:
                if (not retry or attempt >= self.max_attempts
                        or not self._retryable(e, read_only)):
                    if self.db_engine.is_unavailable(e):
                        reason = str(e.orig).strip().splitlines()[0] if e.orig else e
                        raise StorageUnavailable(
                            f"the database is unavailable ({reason}); storage call "
                            f"{name!r} failed. Check that the database server is "
                            "running: the backend uses it again as soon as it is back"
                        ) from e
                    raise
                delay = min(self.retry_delay * 2 ** (attempt - 1), self.max_retry_delay)
                self._sleep(delay * (0.5 + random.random()))
                continue
            if isinstance(result, (Result, Row)):
                raise TypeError(
                    f"storage call {name!r} returned a {type(result).__name__}: thd_ "
                    "functions must return plain values or mapped objects"
                )
            return result, attempt, time.monotonic() - start

    def _finished(
        self, name: str, d: defer.Deferred, queued: float,
        listeners: list[WriteListener], success: bool, result: Any,
    ) -> None:
        self._in_flight -= 1
        for listener in listeners:
            listener.write_ended()
        elapsed = time.monotonic() - queued
        stats = self.timings.get(name)
        if stats is None:
            stats = self.timings[name] = CallStats()
        stats.calls += 1
        stats.total += elapsed
        stats.max = max(stats.max, elapsed)
        if success:
            value, attempts, duration = result
            stats.retries += attempts - 1
            log.debug(
                "storage {name}: {duration:.1f} ms in database, {elapsed:.1f} ms in all"
                "{retries}",
                name=name, duration=duration * 1000, elapsed=elapsed * 1000,
                retries=f" ({attempts} attempts)" if attempts > 1 else "",
            )
        else:
            log.debug("storage {name} failed after {elapsed:.1f} ms: {error}",
                      name=name, elapsed=elapsed * 1000, error=result.getErrorMessage())
        if not self._in_flight and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)
        if d.called:  # cancelled by the caller
            return
        if success:
            d.callback(value)
        else:
            d.errback(result if isinstance(result, Failure) else Failure(result))


class StorageComponent:
    """Base of the storage's domain components (``storage.profiles``...).

    A component is a small module's worth of methods, each one naming its call and
    handing a ``thd_*`` function to :attr:`runner`; see ``doc/developer/storage.rst``
    for how to add one.
    """

    def __init__(self, runner: StorageRunner) -> None:
        self.runner = runner

    @property
    def db_engine(self) -> DatabaseEngine:
        return self.runner.db_engine


# statements run on a driver cursor (StorageRunner.run_in_cursor)

#: statements compiled once per dialect, by key
_COMPILED: dict[tuple[str, str, Any], Compiled] = {}


def compiled(dialect: Any, key: Any, build: Callable[[], Any]) -> Compiled:
    """The SQL of the statement ``build()`` for ``dialect``, compiled on first use.

    ``key`` names the statement (with everything its shape depends on); parameters are
    ``bindparam`` by name, given to :func:`execute`.
    """
    cache_key = (dialect.name, dialect.driver, key)
    found = _COMPILED.get(cache_key)
    if found is None:
        statement = build().compile(dialect=dialect)
        names = tuple(statement.positiontup or ()) if statement.positional else None
        found = _COMPILED[cache_key] = (str(statement), names, dict(statement.params))
    return found


def execute(cursor: Any, statement: Compiled, params: dict[str, Any]) -> Any:
    """Run a statement of :func:`compiled` with ``params`` on a driver cursor."""
    sql, names, defaults = statement
    values = defaults | params
    return cursor.execute(sql, values if names is None else [values[n] for n in names])

