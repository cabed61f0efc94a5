"""The storage: high-level, asynchronous access to the backend's database.

Every method of :class:`Storage` returns a Deferred.  The work is done by a function
named ``thd_*`` which runs in one of the storage's *own* threads (a
:class:`~twisted.python.threadpool.ThreadPool` distinct from the reactor's default
pool, so that slow DNS look-ups or other blocking calls never queue behind database
work, and the other way round) and receives the session (or connection) first.

Each call carries a short name (``"get_items"``, ``"cache_pubsub_items"``...) used in
the debug log and in :attr:`Storage.timings`.  A call failing with a transient error
(SQLite busy or locked; PostgreSQL serialization failure or deadlock) is retried, in a
new transaction, up to :attr:`Storage.max_attempts` times with a short back-off.

Nothing from SQLAlchemy's result API (``Result``, ``Row``) crosses back to the reactor
thread: the ``thd_*`` functions return plain values or mapped objects, detached from
their (closed) session with all their columns loaded.
"""

import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import (
    ColumnElement,
    Engine,
    Integer,
    Row,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import URL, Connection, Result
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from libervia.backend.core.exceptions import BackendError, ConflictError, NotFound
from libervia.backend.core.log import getLogger
from libervia.backend.memory import schema
from libervia.backend.memory.engines import WRITE_OPTION, create_database_engine
from libervia.backend.memory.search import SearchQuery, thd_search
from libervia.backend.memory.sqla_mapping import (
    ParamGen,
    ParamInd,
    PrivateGen,
    PrivateGenBin,
    PrivateInd,
    PrivateIndBin,
    Profile,
    PubsubItem,
    PubsubNode,
    SyncState,
    utcnow,
)

log = getLogger(__name__)

T = TypeVar("T")

#: items written per transaction by :meth:`Storage.cache_pubsub_items`
DEFAULT_BATCH_SIZE = 200


class StorageError(BackendError):
    """The storage can't do what was asked (for instance: it is not running)."""


class StorageUnavailable(StorageError):
    """The database can't be reached: its server is stopped, the connection was lost.

    The call fails at once rather than waiting; the next calls reconnect by themselves
    once the database is back (connections are checked before use).
    """


class OrderBy(StrEnum):
    """Orders in which :meth:`Storage.get_items` can return items."""

    CREATION = "creation"
    MODIFICATION = "modification"


@dataclass(frozen=True)
class ItemsPage:
    """Where a page of items returned by :meth:`Storage.get_items` lies.

    The same information as an RSM (XEP-0059) answer: ``first`` and ``last`` are the
    ids of the first and last items of the page (``None`` when it is empty), ``index``
    the position of the first one in the whole ordered set (``None`` when empty), and
    ``count`` the size of that whole set.
    """

    first: str | None
    last: str | None
    index: int | None
    count: int


class ItemData(NamedTuple):
    """An item as :meth:`Storage.get_items` gives it with ``data_only``: its id and XML.

    What answering a get-items request needs, without the cost of the rest of the row
    (parsed data decoded from JSON, time stamps parsed) nor of a mapped object.
    """

    name: str
    data: str


class _ItemCounts:
    """Item counts of nodes, remembered between reads as long as nothing is written.

    Answering "the last N items" RSM style needs the number of items of the node, and
    counting them costs as much as the node is large, for every request.  The counts
    found are kept here; any write call of the storage (whatever it writes) forgets
    them all when it starts and when it ends.  A count is used (or kept) by a read only
    if no write started or ended around that read's queries, so it always matches the
    data the read saw.  This holds because the storage is its database's only writer
    (one backend per database).

    Methods are called from the storage's threads: a lock guards the state.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epoch = 0
        self._writing = 0
        self._counts: dict[int, int] = {}

    def write_started(self) -> None:
        with self._lock:
            self._epoch += 1
            self._writing += 1
            self._counts.clear()

    def write_ended(self) -> None:
        with self._lock:
            self._epoch += 1
            self._writing -= 1
            self._counts.clear()

    def get(self, node_id: int) -> tuple[int, int | None]:
        """``(epoch, count)``: call before the read's first query; count may be None."""
        with self._lock:
            return self._epoch, None if self._writing else self._counts.get(node_id)

    def unchanged(self, epoch: int) -> bool:
        """Whether nothing was written since :meth:`get` gave ``epoch``."""
        with self._lock:
            return epoch == self._epoch and not self._writing

    def remember(self, epoch: int, node_id: int, count: int) -> None:
        with self._lock:
            if epoch == self._epoch and not self._writing:
                self._counts[node_id] = count


@dataclass
class CallStats:
    """Timings of one kind of storage call, in seconds."""

    calls: int = 0
    total: float = 0.0
    max: float = 0.0
    retries: int = 0


#: columns of a node that :meth:`Storage.set_pubsub_node` may set
NODE_FIELDS = frozenset({
    "analyser", "type_", "subtype", "subscribed", "sync_state", "extra",
    "sync_items_done", "sync_items_expected",
})


class Storage:
    """High-level API of the database; see the module documentation.

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
        self.db_engine = create_database_engine(url)
        self.threads = threads or self.db_engine.default_threads
        self.max_attempts = max_attempts
        self.script_location = script_location
        self._sleep = sleep
        self.sa_engine: Engine | None = None
        self._sessions: dict[bool, sessionmaker[Session]] = {}
        self._pool: ThreadPool | None = None
        self._accepting = False
        self._in_flight = 0
        self._idle_waiters: list[defer.Deferred] = []
        #: statistics by call name
        self.timings: dict[str, CallStats] = {}
        self._item_counts = _ItemCounts()
        #: each storage thread's own connection for the hottest reads
        self._local = threading.local()
        self._read_connections: set[Any] = set()
        self._read_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Storage {self.db_engine!r}>"

    # life cycle

    @property
    def running(self) -> bool:
        return self._accepting

    def start(self) -> defer.Deferred:
        """Start the thread pool and open the database (folder, permissions, engine)."""
        if self._pool is not None:
            return defer.fail(StorageError("the storage is already started"))
        self._pool = ThreadPool(minthreads=0, maxthreads=self.threads, name="storage")
        # daemon threads: a storage that was never stopped (a crash, a failed test)
        # must not keep the process alive; an interrupted transaction is rolled back
        self._pool.threadFactory = _daemon_thread
        self._pool.start()
        self._accepting = True
        d = self._call("open", self._thd_open, None)

        def failed(failure: Failure) -> defer.Deferred:
            # nothing may be left running: the caller won't call stop()
            return self.stop().addCallback(lambda __: failure)

        return d.addErrback(failed)

    def _thd_open(self, __: None) -> None:
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
        def thd(__: None) -> schema.MigrationReport:
            assert self.sa_engine is not None
            with self.db_engine.migration_connection(self.sa_engine) as conn:
                return schema.thd_migrate(
                    conn, self.db_engine, self.script_location, keep_backups
                )

        return self._call("migrate", thd, None, retry=False)

    # running calls in the threads

    def run_in_session(
        self,
        name: str,
        thd_func: Callable[..., T],
        *args: Any,
        write: bool = True,
        **kwargs: Any,
    ) -> defer.Deferred:
        """Run ``thd_func(session, *args, **kwargs)`` in a transaction, in a thread.

        Plugins with queries of their own use this too.  The transaction is committed
        when ``thd_func`` returns, rolled back if it raises.

        :param name: short name of the call, for logs and timings
        :param write: the transaction may write (on SQLite, it then takes the write
            lock at once: see :mod:`~libervia.backend.memory.engines`)
        :return: Deferred fired with what ``thd_func`` returned
        """
        def thd(__: None) -> T:
            if not self._sessions:
                raise StorageError(f"storage call {name!r} made before start() finished")
            with self._sessions[write]() as session:
                with session.begin():
                    result = thd_func(session, *args, **kwargs)
                # objects leave the session here: its closing detaches them
                return result

        return self._call(name, thd, None, read_only=not write)

    def run_in_connection(
        self,
        name: str,
        thd_func: Callable[..., T],
        *args: Any,
        write: bool = True,
        **kwargs: Any,
    ) -> defer.Deferred:
        """Like :meth:`run_in_session`, with a Core connection instead of a session."""
        def thd(__: None) -> T:
            engine = self.sa_engine
            if engine is None:
                raise StorageError(f"storage call {name!r} made before start() finished")
            if write:
                engine = engine.execution_options(**{WRITE_OPTION: True})
            with engine.begin() as conn:
                return thd_func(conn, *args, **kwargs)

        return self._call(name, thd, None, read_only=not write)

    def _run_in_cursor(self, name: str, thd_func: Callable[..., T], *args: Any
                       ) -> defer.Deferred:
        """Run ``thd_func(cursor, db_engine, dialect, *args)`` on a driver cursor.

        For the few reads made for every request (see
        :meth:`~.engines.DatabaseEngine.read_cursor`): ``thd_func`` runs statements
        compiled once (:func:`_compiled`) on the driver's cursor, after
        ``db_engine.begin_read(cursor)`` if they must see the same data.
        """
        def thd(__: None) -> T:
            engine = self.sa_engine
            if engine is None:
                raise StorageError(f"storage call {name!r} made before start() finished")
            conn = self._thd_read_connection(engine)
            try:
                with self.db_engine.read_cursor(conn, engine.dialect) as cursor:
                    return thd_func(cursor, self.db_engine, engine.dialect, *args)
            except DBAPIError as e:
                if e.connection_invalidated:
                    self._thd_drop_read_connection(conn)
                raise

        return self._call(name, thd, None, read_only=True)

    def _thd_read_connection(self, engine: Engine) -> Any:
        """This thread's own driver connection, for :meth:`_run_in_cursor`.

        Taken from the pool once, then detached from it: checking a connection out of
        the pool and resetting it costs as much as the read itself.  Closed by
        :meth:`stop`.
        """
        conn = getattr(self._local, "connection", None)
        if conn is None:
            pooled = engine.raw_connection()
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
        thd: Callable[[None], T],
        arg: None,
        retry: bool = True,
        read_only: bool = False,
    ) -> defer.Deferred:
        if not self._accepting or self._pool is None:
            return defer.fail(StorageError(
                f"storage call {name!r} refused: the storage is not running"
            ))
        d: defer.Deferred = defer.Deferred()
        self._in_flight += 1
        queued = time.monotonic()

        def on_result(success: bool, result: Any) -> None:
            self.reactor.callFromThread(self._finished, name, d, queued, success, result)

        self._pool.callInThreadWithCallback(
            on_result, self._thd_attempts, name, thd, retry, read_only
        )
        return d

    def _retryable(self, error: DBAPIError, read_only: bool) -> bool:
        if self.db_engine.is_transient(error):
            return True
        # a connection lost during a read-only transaction: nothing was changed, a new
        # connection can try again (a write may have been committed: not retried)
        return read_only and error.connection_invalidated

    def _thd_attempts(
        self, name: str, thd: Callable[[None], T], retry: bool, read_only: bool
    ) -> tuple[T, int, float]:
        if read_only:
            return self._thd_retried(name, thd, retry, read_only)
        self._item_counts.write_started()
        try:
            return self._thd_retried(name, thd, retry, read_only)
        finally:
            self._item_counts.write_ended()

    def _thd_retried(
        self, name: str, thd: Callable[[None], T], retry: bool, read_only: bool
    ) -> tuple[T, int, float]:
        attempt = 0
        while True:
            attempt += 1
            start = time.monotonic()
            try:
                result = thd(None)
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
        self, name: str, d: defer.Deferred, queued: float, success: bool, result: Any
    ) -> None:
        self._in_flight -= 1
        elapsed = time.monotonic() - queued
        stats = self.timings.setdefault(name, CallStats())
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

    # profiles

    def get_profiles(self) -> defer.Deferred:
        """Return ``{profile name: profile id}``."""
        return self.run_in_session("get_profiles", thd_get_profiles, write=False)

    def create_profile(self, name: str) -> defer.Deferred:
        """Create a profile and return its id.

        :raise ConflictError: a profile with this name exists
        """
        return self.run_in_session("create_profile", thd_create_profile, name)

    def delete_profile(self, name: str) -> defer.Deferred:
        """Delete a profile with all its data (parameters, private values, cache).

        :raise NotFound: no such profile
        """
        return self.run_in_session("delete_profile", thd_delete_profile, name)

    # parameters

    def get_params(
        self, profile: str | None = None, category: str | None = None
    ) -> defer.Deferred:
        """Return ``{(category, name): value}`` of general or ``profile``'s parameters."""
        return self.run_in_session(
            "get_params", thd_get_params, profile, category, write=False
        )

    def get_param(
        self, category: str, name: str, profile: str | None = None
    ) -> defer.Deferred:
        """Return the value of a parameter, or ``None`` if it is not set."""
        return self.run_in_session(
            "get_param", thd_get_param, category, name, profile, write=False
        )

    def set_param(
        self, category: str, name: str, value: str | None, profile: str | None = None
    ) -> defer.Deferred:
        """Set a general parameter, or ``profile``'s one."""
        return self.run_in_session(
            "set_param", thd_set_param, self.db_engine, category, name, value, profile
        )

    def delete_param(
        self, category: str, name: str, profile: str | None = None
    ) -> defer.Deferred:
        """Delete a parameter; fire with True if it existed."""
        return self.run_in_session("delete_param", thd_delete_param, category, name, profile)

    # private values

    def get_privates(
        self,
        namespace: str,
        keys: Iterable[str] | None = None,
        *,
        binary: bool = False,
        profile: str | None = None,
    ) -> defer.Deferred:
        """Return ``{key: value}`` of a namespace (all its keys, or only ``keys``).

        Values are what was stored: JSON-serialisable values, or ``bytes`` if
        ``binary``.
        """
        return self.run_in_session(
            "get_privates", thd_get_privates, namespace,
            None if keys is None else list(keys), binary, profile, write=False,
        )

    def set_private_value(
        self,
        namespace: str,
        key: str,
        value: Any,
        *,
        binary: bool = False,
        profile: str | None = None,
    ) -> defer.Deferred:
        """Store a private value: JSON-serialisable, or ``bytes`` if ``binary``."""
        if binary:
            if not isinstance(value, (bytes, bytearray, memoryview)):
                return defer.fail(TypeError(
                    f"binary private values must be bytes, not {type(value).__name__}"
                ))
            stored: Any = bytes(value)
        else:
            try:
                stored = json.dumps(value, ensure_ascii=False)
            except (TypeError, ValueError) as e:
                return defer.fail(TypeError(f"private value is not JSON-serialisable: {e}"))
        return self.run_in_session(
            "set_private_value", thd_set_private_value, self.db_engine, namespace, key,
            stored, binary, profile,
        )

    def del_private_value(
        self, namespace: str, key: str, *, binary: bool = False, profile: str | None = None
    ) -> defer.Deferred:
        """Delete a private value; fire with True if it existed."""
        return self.run_in_session(
            "del_private_value", thd_del_private, namespace, [key], binary, profile
        ).addCallback(bool)

    def del_private_namespace(
        self, namespace: str, *, binary: bool = False, profile: str | None = None
    ) -> defer.Deferred:
        """Delete every value of a namespace; fire with how many there were."""
        return self.run_in_session(
            "del_private_namespace", thd_del_private, namespace, None, binary, profile
        )

    # pubsub nodes

    def get_pubsub_node(self, profile: str, service: str, name: str) -> defer.Deferred:
        """Return the :class:`PubsubNode`, or ``None`` if it is not known."""
        return self.run_in_session(
            "get_pubsub_node", thd_get_pubsub_node, profile, service, name, write=False
        )

    def set_pubsub_node(
        self, profile: str, service: str, name: str, **fields: Any
    ) -> defer.Deferred:
        """Create the node if needed, set ``fields`` on it, and return it.

        :param fields: columns to set (see :data:`NODE_FIELDS`); others keep their value
        """
        unknown = set(fields) - NODE_FIELDS
        if unknown:
            return defer.fail(TypeError(
                f"unknown pubsub node field(s): {', '.join(sorted(unknown))}"
            ))
        return self.run_in_session(
            "set_pubsub_node", thd_set_pubsub_node, profile, service, name, fields
        )

    def get_pubsub_nodes(
        self,
        profile: str | None = None,
        *,
        service: str | None = None,
        sync_states: Iterable[SyncState | None] | None = None,
    ) -> defer.Deferred:
        """Return the known nodes, optionally filtered, ordered by id.

        :param sync_states: states to keep (``None`` in it keeps unsynchronised nodes)
        """
        return self.run_in_session(
            "get_pubsub_nodes", thd_get_pubsub_nodes, profile, service,
            None if sync_states is None else list(sync_states), write=False,
        )

    def delete_pubsub_nodes(
        self,
        profiles: Iterable[str] | None = None,
        services: Iterable[str] | None = None,
        names: Iterable[str] | None = None,
    ) -> defer.Deferred:
        """Delete the nodes matching every filter given, with their items.

        :return: Deferred fired with the number of nodes deleted
        """
        return self.run_in_session(
            "delete_pubsub_nodes", thd_delete_pubsub_nodes,
            _opt_list(profiles), _opt_list(services), _opt_list(names),
        )

    def update_pubsub_node_sync_state(
        self,
        node_id: int,
        state: SyncState | None,
        *,
        items_done: int | None = None,
        items_expected: int | None = None,
    ) -> defer.Deferred:
        """Set the sync state of a node (and its progress), time stamped now.

        :raise NotFound: no node with this id
        """
        return self.run_in_session(
            "update_sync_state", thd_update_sync_state, node_id, state, items_done,
            items_expected,
        )

    # pubsub items

    def cache_pubsub_items(
        self,
        node_id: int,
        items: Iterable[Mapping[str, Any]],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        count_progress: bool = False,
    ) -> defer.Deferred:
        """Insert or update items of a node, in transactions of ``batch_size`` items.

        Each item is a mapping with ``name`` (item id) and ``data`` (raw XML, as a
        string), and optionally ``parsed`` (JSON-serialisable), ``created`` and
        ``updated`` (datetimes; default: now).  An existing item keeps its creation
        time; the rest is replaced.  When an id appears several times, the last wins.

        :param count_progress: add the items written to the node's
            ``sync_items_done``, in the same transaction (synchronisations use it)
        :return: Deferred fired with the number of items written
        """
        try:
            rows = _item_rows(node_id, items)
        except (KeyError, TypeError) as e:
            return defer.fail(ValueError(f"invalid item to cache: {e}"))
        return defer.ensureDeferred(self._cache_batches(node_id, rows, batch_size,
                                                        count_progress))

    async def _cache_batches(
        self, node_id: int, rows: list[dict[str, Any]], batch_size: int,
        count_progress: bool,
    ) -> int:
        written = 0
        for start in range(0, len(rows), max(1, batch_size)):
            batch = rows[start:start + batch_size]
            written += await self.run_in_session(
                "cache_pubsub_items", thd_cache_items, self.db_engine, node_id, batch,
                count_progress,
            )
        return written

    def replace_pubsub_items(
        self,
        node_id: int,
        items: Iterable[Mapping[str, Any]],
        *,
        sync_state: SyncState | None = None,
    ) -> defer.Deferred:
        """Replace every item of a node, in one transaction.

        Readers see either the old items or the new ones, never a mix: this is how a
        synchronisation publishes its result.  Items are given as for
        :meth:`cache_pubsub_items`.

        :param sync_state: if given, set on the node in the same transaction, with its
            progress (items done and expected) set to the number of items
        :return: Deferred fired with the number of items written
        """
        try:
            rows = _item_rows(node_id, items)
        except (KeyError, TypeError) as e:
            return defer.fail(ValueError(f"invalid item to cache: {e}"))
        return self.run_in_session(
            "replace_pubsub_items", thd_replace_items, self.db_engine, node_id, rows,
            sync_state,
        )

    def get_cache_stats(self, profile: str | None = None) -> defer.Deferred:
        """Return what the pubsub cache holds (for one profile, or in all).

        :return: Deferred fired with ``{"nodes": {state: count}, "items": count,
            "bytes": size of the raw XML}``; the state of unsynchronised nodes is
            ``"none"``, the others are :class:`SyncState` names
        """
        return self.run_in_session("get_cache_stats", thd_cache_stats, self.db_engine,
                                   profile, write=False)

    def delete_pubsub_items(
        self, node_id: int, item_ids: Iterable[str] | None = None
    ) -> defer.Deferred:
        """Delete the given items of a node (all of them if ``item_ids`` is None).

        :return: Deferred fired with the number of items deleted
        """
        return self.run_in_session(
            "delete_pubsub_items", thd_delete_items, node_id, _opt_list(item_ids)
        )

    def purge_pubsub_items(
        self,
        *,
        profiles: Iterable[str] | None = None,
        services: Iterable[str] | None = None,
        names: Iterable[str] | None = None,
        types: Iterable[str] | None = None,
        subtypes: Iterable[str] | None = None,
        created_before: datetime | None = None,
        updated_before: datetime | None = None,
    ) -> defer.Deferred:
        """Delete cached items matching every filter given (all items if none is).

        :return: Deferred fired with the number of items deleted
        """
        return self.run_in_session(
            "purge_pubsub_items", thd_purge_items, _opt_list(profiles),
            _opt_list(services), _opt_list(names), _opt_list(types), _opt_list(subtypes),
            created_before, updated_before,
        )

    def search_pubsub_items(
        self,
        text: str,
        *,
        profiles: Iterable[str] | None = None,
        services: Iterable[str] | None = None,
        names: Iterable[str] | None = None,
        types: Iterable[str] | None = None,
        subtypes: Iterable[str] | None = None,
        node_ids: Iterable[int] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> defer.Deferred:
        """Full-text search of cached items: those whose XML holds every word of ``text``.

        Node filters are as for :meth:`purge_pubsub_items`.  Words are matched whole,
        case-insensitively (SQLite FTS5 ``unicode61`` tokenizer; PostgreSQL ``simple``
        text search configuration, which also ignores XML tag names).

        :return: Deferred fired with a list of ``(PubsubItem, score)``, best first
        :raise ValueError: ``text`` has no word, or ``limit``/``offset`` is negative
        """
        words = text.split()
        if not words:
            return defer.fail(ValueError("nothing to search: give at least one word"))
        if limit < 0 or offset < 0:
            return defer.fail(ValueError("limit and offset can't be negative"))
        return self.run_in_session(
            "search_pubsub_items", thd_search_items, self.db_engine, words,
            _node_filters(_opt_list(profiles), _opt_list(services), _opt_list(names),
                          _opt_list(types), _opt_list(subtypes)),
            None if node_ids is None else list(node_ids), limit, offset, write=False,
        )

    def search_items(self, query: SearchQuery | Mapping[str, Any]) -> defer.Deferred:
        """Search cached items by node, parsed data and full text, one page at a time.

        :param query: a :class:`~.search.SearchQuery`, or its JSON form (a mapping,
            see ``doc/developer/search.rst``), validated here
        :return: Deferred fired with a :class:`~.search.SearchResult`
        :raise InvalidQuery: the query is invalid; the message says why
        """
        try:
            if not isinstance(query, SearchQuery):
                query = SearchQuery.from_dict(query)
        except ValueError:
            return defer.fail()
        return self.run_in_session("search_items", thd_search, self.db_engine, query,
                                   write=False)

    def get_items(
        self,
        node_id: int,
        *,
        max_items: int | None = None,
        item_ids: Iterable[str] | None = None,
        before: str | None = None,
        after: str | None = None,
        index: int | None = None,
        order_by: OrderBy | str = OrderBy.CREATION,
        desc: bool = False,
        data_only: bool = False,
    ) -> defer.Deferred:
        """Return a page of a node's items, RSM style.

        The items (only ``item_ids`` if given) are ordered by creation or modification
        time, oldest first (newest first if ``desc``), ties broken by storage order.
        In that order, at most ``max_items`` items are taken:

        * ``after``: just after the item with this id;
        * ``before``: just before the item with this id, or the last page if ``""``;
        * ``index``: from this position (0 is the first item);
        * none of them: from the start.

        :param data_only: give :class:`ItemData` (id and XML) instead of
            :class:`PubsubItem`: what answering a request needs, read faster
        :return: Deferred fired with ``(items, page)``: a list of :class:`PubsubItem`
            (or :class:`ItemData`) in that order, and an :class:`ItemsPage`
        :raise NotFound: the ``before`` or ``after`` item is not in the set
        :raise ValueError: more than one of ``before``, ``after``, ``index``, or a
            negative ``max_items`` or ``index``
        """
        given = [p for p in (before, after, index) if p is not None]
        if len(given) > 1:
            return defer.fail(ValueError("use only one of before, after and index"))
        if (max_items is not None and max_items < 0) or (index is not None and index < 0):
            return defer.fail(ValueError("max_items and index can't be negative"))
        try:
            order = OrderBy(order_by)
        except ValueError:
            return defer.fail(ValueError(
                f"unknown order {order_by!r}, use one of {', '.join(OrderBy)}"
            ))
        if data_only and item_ids is None and after is None and before in (None, ""):
            # what a frontend asks most (the latest items, a page by position)
            return self._run_in_cursor(
                "get_items", thd_get_items_data, node_id, max_items, before == "",
                index, order, desc, self._item_counts)
        # rows without mapped objects need no session: a connection is less work
        run = self.run_in_connection if data_only else self.run_in_session
        return run(
            "get_items", thd_get_items, node_id, max_items, _opt_list(item_ids), before,
            after, index, order, desc, data_only=data_only, counts=self._item_counts,
            write=False,
        )


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    return threading.Thread(*args, daemon=True, **kwargs)


def _opt_list(values: Iterable[str] | None) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        return [values]
    return list(values)


def _item_rows(node_id: int, items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    now = utcnow()
    by_name: dict[str, dict[str, Any]] = {}
    for item in items:
        name = item["name"]
        data = item["data"]
        if not isinstance(name, str) or not name:
            raise TypeError("item name must be a non-empty string")
        if not isinstance(data, str):
            raise TypeError(f"data of item {name!r} must be a string of XML")
        by_name[name] = {
            "node_id": node_id,
            "name": name,
            "data": data,
            "parsed": item.get("parsed"),
            "created": item.get("created") or now,
            "updated": item.get("updated") or item.get("created") or now,
        }
    # a stable lock order: concurrent batches on PostgreSQL can't deadlock each other
    return [by_name[name] for name in sorted(by_name)]


# functions run in the storage's threads


def thd_profile_id(session: Session, profile: str) -> int:
    profile_id = session.scalar(select(Profile.id).where(Profile.name == profile))
    if profile_id is None:
        raise NotFound(f"there is no profile named {profile!r}")
    return profile_id


def thd_get_profiles(session: Session) -> dict[str, int]:
    return {name: id_ for name, id_ in session.execute(select(Profile.name, Profile.id))}


def thd_create_profile(session: Session, name: str) -> int:
    profile = Profile(name=name)
    try:
        with session.begin_nested():
            session.add(profile)
    except IntegrityError:
        raise ConflictError(f"a profile named {name!r} already exists") from None
    return profile.id


def thd_delete_profile(session: Session, name: str) -> None:
    result = session.execute(delete(Profile).where(Profile.name == name))
    if not result.rowcount:
        raise NotFound(f"there is no profile named {name!r}")


def thd_get_params(
    session: Session, profile: str | None, category: str | None
) -> dict[tuple[str, str], str | None]:
    if profile is None:
        query = select(ParamGen.category, ParamGen.name, ParamGen.value)
        if category is not None:
            query = query.where(ParamGen.category == category)
    else:
        profile_id = thd_profile_id(session, profile)
        query = select(ParamInd.category, ParamInd.name, ParamInd.value).where(
            ParamInd.profile_id == profile_id
        )
        if category is not None:
            query = query.where(ParamInd.category == category)
    return {(cat, name): value for cat, name, value in session.execute(query)}


def thd_get_param(
    session: Session, category: str, name: str, profile: str | None
) -> str | None:
    if profile is None:
        param = session.get(ParamGen, (category, name))
    else:
        param = session.get(ParamInd, (category, name, thd_profile_id(session, profile)))
    return None if param is None else param.value


def _thd_upsert_value(
    session: Session, db_engine: Any, cls: type, keys: dict[str, Any], value: Any
) -> None:
    # an upsert, not a read then a write: two calls setting the same key at the same
    # time must not fail on the primary key
    stmt = db_engine.upsert(cls.__table__, list(keys), ["value"])
    session.execute(stmt, {**keys, "value": value})


def thd_set_param(
    session: Session,
    db_engine: Any,
    category: str,
    name: str,
    value: str | None,
    profile: str | None,
) -> None:
    keys: dict[str, Any] = {"category": category, "name": name}
    if profile is not None:
        keys["profile_id"] = thd_profile_id(session, profile)
    _thd_upsert_value(session, db_engine, ParamGen if profile is None else ParamInd, keys,
                      value)


def thd_delete_param(
    session: Session, category: str, name: str, profile: str | None
) -> bool:
    if profile is None:
        stmt = delete(ParamGen).where(ParamGen.category == category, ParamGen.name == name)
    else:
        stmt = delete(ParamInd).where(
            ParamInd.category == category,
            ParamInd.name == name,
            ParamInd.profile_id == thd_profile_id(session, profile),
        )
    return bool(session.execute(stmt).rowcount)


def _private_class(binary: bool, profile: str | None) -> type:
    if profile is None:
        return PrivateGenBin if binary else PrivateGen
    return PrivateIndBin if binary else PrivateInd


def _private_filter(
    session: Session, cls: type, namespace: str, profile: str | None
) -> list[ColumnElement[bool]]:
    conditions = [cls.namespace == namespace]
    if profile is not None:
        conditions.append(cls.profile_id == thd_profile_id(session, profile))
    return conditions


def thd_get_privates(
    session: Session,
    namespace: str,
    keys: list[str] | None,
    binary: bool,
    profile: str | None,
) -> dict[str, Any]:
    cls = _private_class(binary, profile)
    query = select(cls.key, cls.value).where(*_private_filter(session, cls, namespace,
                                                              profile))
    if keys is not None:
        query = query.where(cls.key.in_(keys))
    values: dict[str, Any] = {}
    for key, value in session.execute(query):
        if binary or value is None:
            values[key] = value
        else:
            values[key] = json.loads(value)
    return values


def thd_set_private_value(
    session: Session,
    db_engine: Any,
    namespace: str,
    key: str,
    stored: str | bytes,
    binary: bool,
    profile: str | None,
) -> None:
    keys: dict[str, Any] = {"namespace": namespace, "key": key}
    if profile is not None:
        keys["profile_id"] = thd_profile_id(session, profile)
    _thd_upsert_value(session, db_engine, _private_class(binary, profile), keys, stored)


def thd_del_private(
    session: Session,
    namespace: str,
    keys: list[str] | None,
    binary: bool,
    profile: str | None,
) -> int:
    cls = _private_class(binary, profile)
    stmt = delete(cls).where(*_private_filter(session, cls, namespace, profile))
    if keys is not None:
        stmt = stmt.where(cls.key.in_(keys))
    return session.execute(stmt).rowcount


def _node_query(session: Session, profile: str, service: str, name: str) -> Any:
    return select(PubsubNode).where(
        PubsubNode.profile_id == thd_profile_id(session, profile),
        PubsubNode.service == service,
        PubsubNode.name == name,
    )


def thd_get_pubsub_node(
    session: Session, profile: str, service: str, name: str
) -> PubsubNode | None:
    return session.scalar(_node_query(session, profile, service, name))


def thd_set_pubsub_node(
    session: Session, profile: str, service: str, name: str, fields: dict[str, Any]
) -> PubsubNode:
    # NO KEY UPDATE: items being inserted meanwhile hold KEY SHARE on the node (their
    # foreign key), which a plain FOR UPDATE would wait for, inviting deadlocks
    node = session.scalar(
        _node_query(session, profile, service, name).with_for_update(key_share=True)
    )
    if node is None:
        node = PubsubNode(
            profile_id=thd_profile_id(session, profile), service=service, name=name,
            sync_items_done=0, subscribed=False,
        )
        try:
            with session.begin_nested():
                session.add(node)
        except IntegrityError:
            # created meanwhile by another call: update that one
            node = session.scalars(_node_query(session, profile, service, name)).one()
    for field, value in fields.items():
        setattr(node, field, value)
    if "sync_state" in fields:
        node.sync_state_updated = utcnow()
    session.flush()
    return node


def thd_get_pubsub_nodes(
    session: Session,
    profile: str | None,
    service: str | None,
    sync_states: list[SyncState | None] | None,
) -> list[PubsubNode]:
    query = select(PubsubNode).order_by(PubsubNode.id)
    if profile is not None:
        query = query.where(PubsubNode.profile_id == thd_profile_id(session, profile))
    if service is not None:
        query = query.where(PubsubNode.service == service)
    if sync_states is not None:
        states = [s for s in sync_states if s is not None]
        condition = PubsubNode.sync_state.in_(states)
        if None in sync_states:
            condition = or_(condition, PubsubNode.sync_state.is_(None))
        query = query.where(condition)
    return list(session.scalars(query))


def _node_filters(
    profiles: list[str] | None,
    services: list[str] | None,
    names: list[str] | None,
    types: list[str] | None = None,
    subtypes: list[str] | None = None,
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if profiles is not None:
        conditions.append(PubsubNode.profile_id.in_(
            select(Profile.id).where(Profile.name.in_(profiles))
        ))
    if services is not None:
        conditions.append(PubsubNode.service.in_(services))
    if names is not None:
        conditions.append(PubsubNode.name.in_(names))
    if types is not None:
        conditions.append(PubsubNode.type_.in_(types))
    if subtypes is not None:
        conditions.append(PubsubNode.subtype.in_(subtypes))
    return conditions


def thd_delete_pubsub_nodes(
    session: Session,
    profiles: list[str] | None,
    services: list[str] | None,
    names: list[str] | None,
) -> int:
    stmt = delete(PubsubNode).where(*_node_filters(profiles, services, names))
    return session.execute(stmt).rowcount


def thd_update_sync_state(
    session: Session,
    node_id: int,
    state: SyncState | None,
    items_done: int | None,
    items_expected: int | None,
) -> None:
    values: dict[str, Any] = {"sync_state": state, "sync_state_updated": utcnow()}
    if items_done is not None:
        values["sync_items_done"] = items_done
    if items_expected is not None:
        values["sync_items_expected"] = items_expected
    result = session.execute(
        update(PubsubNode).where(PubsubNode.id == node_id).values(**values)
    )
    if not result.rowcount:
        raise NotFound(f"there is no pubsub node with id {node_id}")


def thd_cache_items(
    session: Session,
    db_engine: Any,
    node_id: int,
    rows: list[dict[str, Any]],
    count_progress: bool,
) -> int:
    if not rows:
        return 0
    stmt = db_engine.upsert(
        PubsubItem.__table__, ["node_id", "name"], ["data", "parsed", "updated"]
    )
    session.execute(stmt, rows)
    if count_progress:
        result = session.execute(
            update(PubsubNode)
            .where(PubsubNode.id == node_id)
            .values(sync_items_done=PubsubNode.sync_items_done + len(rows))
        )
        if not result.rowcount:
            raise NotFound(f"there is no pubsub node with id {node_id}")
    return len(rows)


def thd_replace_items(
    session: Session,
    db_engine: Any,
    node_id: int,
    rows: list[dict[str, Any]],
    sync_state: SyncState | None,
) -> int:
    session.execute(delete(PubsubItem).where(PubsubItem.node_id == node_id))
    for start in range(0, len(rows), DEFAULT_BATCH_SIZE):
        thd_cache_items(session, db_engine, node_id, rows[start:start + DEFAULT_BATCH_SIZE],
                        False)
    if sync_state is not None:
        thd_update_sync_state(session, node_id, sync_state, len(rows), len(rows))
    return len(rows)


def thd_cache_stats(
    session: Session, db_engine: Any, profile: str | None
) -> dict[str, Any]:
    node_filter = []
    if profile is not None:
        node_filter.append(PubsubNode.profile_id == thd_profile_id(session, profile))
    nodes = {
        "none" if state is None else state.name: count
        for state, count in session.execute(
            select(PubsubNode.sync_state, func.count())
            .where(*node_filter).group_by(PubsubNode.sync_state)
        )
    }
    items, size = session.execute(
        select(
            func.count(PubsubItem.id),
            func.coalesce(func.sum(db_engine.byte_length(PubsubItem.data)), 0),
        )
        .join(PubsubNode, PubsubItem.node_id == PubsubNode.id)
        .where(*node_filter)
    ).one()
    return {"nodes": nodes, "items": items, "bytes": int(size)}


def thd_search_items(
    session: Session,
    db_engine: Any,
    words: list[str],
    node_conditions: list[ColumnElement[bool]],
    node_ids: list[int] | None,
    limit: int,
    offset: int,
) -> list[tuple[PubsubItem, float]]:
    join, condition, score = db_engine.fulltext_search(words)
    query = select(PubsubItem, score.label("score"))
    if join is not None:
        query = query.join(*join)
    query = query.where(condition)
    if node_conditions:
        query = query.where(PubsubItem.node_id.in_(
            select(PubsubNode.id).where(*node_conditions)))
    if node_ids is not None:
        query = query.where(PubsubItem.node_id.in_(node_ids))
    query = query.order_by(score.desc(), PubsubItem.id).limit(limit).offset(offset)
    return [(item, float(item_score)) for item, item_score in session.execute(query)]


def thd_delete_items(session: Session, node_id: int, item_ids: list[str] | None) -> int:
    stmt = delete(PubsubItem).where(PubsubItem.node_id == node_id)
    if item_ids is not None:
        stmt = stmt.where(PubsubItem.name.in_(item_ids))
    return session.execute(stmt).rowcount


def thd_purge_items(
    session: Session,
    profiles: list[str] | None,
    services: list[str] | None,
    names: list[str] | None,
    types: list[str] | None,
    subtypes: list[str] | None,
    created_before: datetime | None,
    updated_before: datetime | None,
) -> int:
    stmt = delete(PubsubItem)
    node_conditions = _node_filters(profiles, services, names, types, subtypes)
    if node_conditions:
        stmt = stmt.where(PubsubItem.node_id.in_(
            select(PubsubNode.id).where(*node_conditions)
        ))
    if created_before is not None:
        stmt = stmt.where(PubsubItem.created < created_before)
    if updated_before is not None:
        stmt = stmt.where(PubsubItem.updated < updated_before)
    return session.execute(stmt).rowcount


def thd_get_items(
    session: Session | Connection,
    node_id: int,
    max_items: int | None,
    item_ids: list[str] | None,
    before: str | None,
    after: str | None,
    index: int | None,
    order: OrderBy,
    desc: bool,
    data_only: bool = False,
    counts: _ItemCounts | None = None,
) -> tuple[list[PubsubItem] | list[ItemData], ItemsPage]:
    key = PubsubItem.created if order is OrderBy.CREATION else PubsubItem.updated
    conditions: list[ColumnElement[bool]] = [PubsubItem.node_id == node_id]
    if item_ids is not None:
        conditions.append(PubsubItem.name.in_(item_ids))
    # taken before the first query: see _ItemCounts
    epoch, known_count = (counts.get(node_id) if counts is not None and item_ids is None
                          else (0, None))

    def forward(query: Any, reverse: bool = False) -> Any:
        """Order ``query`` as the set (``reverse``: the other way)."""
        descending = desc != reverse
        return query.order_by(
            *(col.desc() if descending else col.asc() for col in (key, PubsubItem.id))
        )

    def precedes(anchor_key: Any, anchor_id: int, strict: bool = True) -> Any:
        """Condition: the item comes before the anchor in the set's order."""
        first, cmp = (key > anchor_key, PubsubItem.id > anchor_id) if desc else (
            key < anchor_key, PubsubItem.id < anchor_id)
        if not strict:
            cmp = or_(cmp, PubsubItem.id == anchor_id)
        return or_(first, and_(key == anchor_key, cmp))

    def follows(anchor_key: Any, anchor_id: int) -> Any:
        return ~precedes(anchor_key, anchor_id, strict=False)

    def anchor(item_id: str) -> tuple[Any, int]:
        found = session.execute(
            select(key, PubsubItem.id).where(*conditions, PubsubItem.name == item_id)
        ).first()
        if found is None:
            raise NotFound(f"item {item_id!r} is not in the requested set")
        return found[0], found[1]

    if data_only:
        # plain rows: no mapped objects, nor parsed data or time stamps to decode
        base = select(PubsubItem.name, PubsubItem.data).where(*conditions)
    else:
        base = select(PubsubItem).where(*conditions)
    reversed_page = False
    preceding: int | None = None
    if after is not None:
        a_key, a_id = anchor(after)
        query = forward(base.where(follows(a_key, a_id)))
        start = session.scalar(
            select(func.count()).select_from(PubsubItem)
            .where(*conditions, precedes(a_key, a_id, strict=False))
        )
    elif before is not None:
        if before != "":
            b_key, b_id = anchor(before)
            query = forward(base.where(precedes(b_key, b_id)), reverse=True)
            preceding = session.scalar(
                select(func.count()).select_from(PubsubItem)
                .where(*conditions, precedes(b_key, b_id))
            )
        else:
            query = forward(base, reverse=True)
        reversed_page = True
    else:
        start = index or 0
        query = forward(base).offset(start) if start else forward(base)
    if max_items is not None:
        query = query.limit(max_items)
    if data_only:
        items: list[Any] = list(map(ItemData._make, session.execute(query)))
    else:
        items = list(session.scalars(query))
    if known_count is not None and counts is not None and counts.unchanged(epoch):
        count = known_count
    else:
        count = session.scalar(
            select(func.count()).select_from(PubsubItem).where(*conditions))
        assert count is not None
        if counts is not None and item_ids is None:
            counts.remember(epoch, node_id, count)
    if reversed_page:
        items.reverse()
        start = (count if preceding is None else preceding) - len(items)
    if not items:
        return items, ItemsPage(None, None, None, count)
    return items, ItemsPage(items[0].name, items[-1].name, start, count)


#: statements compiled once per dialect, by key: (SQL text, positional names or None,
#: values of the parameters the compiler added itself, e.g. SQLite's ``LIMIT -1``)
_COMPILED: dict[tuple[str, str, Any], tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}


def _compiled(dialect: Any, key: Any, build: Callable[[], Any]
              ) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
    """The SQL of the statement ``build()`` for ``dialect``, compiled on first use.

    Parameters are ``bindparam`` by name; see :func:`_execute`.
    """
    cache_key = (dialect.name, dialect.driver, key)
    found = _COMPILED.get(cache_key)
    if found is None:
        compiled = build().compile(dialect=dialect)
        names = tuple(compiled.positiontup or ()) if compiled.positional else None
        found = _COMPILED[cache_key] = (str(compiled), names, dict(compiled.params))
    return found


def _execute(cursor: Any, compiled: tuple[str, tuple[str, ...] | None, dict[str, Any]],
             params: dict[str, Any]) -> Any:
    sql, names, defaults = compiled
    values = defaults | params
    return cursor.execute(sql, values if names is None else [values[n] for n in names])


def _page_statement(order: OrderBy, descending: bool, limit: bool, offset: bool) -> Any:
    key = PubsubItem.created if order is OrderBy.CREATION else PubsubItem.updated
    query = select(PubsubItem.name, PubsubItem.data).where(
        PubsubItem.node_id == bindparam("node_id")
    ).order_by(*(col.desc() if descending else col.asc() for col in (key, PubsubItem.id)))
    if limit:
        query = query.limit(bindparam("limit", type_=Integer))
    if offset:
        query = query.offset(bindparam("offset", type_=Integer))
    return query


def _count_statement() -> Any:
    return select(func.count()).select_from(PubsubItem).where(
        PubsubItem.node_id == bindparam("node_id"))


def thd_get_items_data(
    cursor: Any,
    db_engine: Any,
    dialect: Any,
    node_id: int,
    max_items: int | None,
    last_page: bool,
    index: int | None,
    order: OrderBy,
    desc: bool,
    counts: _ItemCounts,
) -> tuple[list[ItemData], ItemsPage]:
    """:func:`thd_get_items` with ``data_only``, without ids nor anchor item."""
    epoch, count = counts.get(node_id)
    if count is None:
        # the page and the count: one snapshot for both
        db_engine.begin_read(cursor)
    start = 0 if last_page else index or 0
    params = {"node_id": node_id, "limit": max_items, "offset": start}
    page = _compiled(dialect, ("page", order, desc != last_page, max_items is not None,
                               bool(start)),
                     lambda: _page_statement(order, desc != last_page,
                                             max_items is not None, bool(start)))
    items = list(map(ItemData._make, _execute(cursor, page, params)))
    if count is not None and not counts.unchanged(epoch):
        # written meanwhile: the count may not be the page's; both again, together
        cursor.connection.rollback()
        db_engine.begin_read(cursor)
        items = list(map(ItemData._make, _execute(cursor, page, params)))
        count = None
    if count is None:
        count = _execute(cursor, _compiled(dialect, "count", _count_statement),
                         params).fetchone()[0]
        counts.remember(epoch, node_id, count)
    if last_page:
        items.reverse()
        start = count - len(items)
    if not items:
        return items, ItemsPage(None, None, None, count)
    return items, ItemsPage(items[0].name, items[-1].name, start, count)
