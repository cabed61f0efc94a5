"""What differs between the database engines: SQLite and PostgreSQL.

Everything else in the storage is written once against SQLAlchemy; a
:class:`DatabaseEngine` holds the few places where the two engines must be told apart:
connection set-up (pragmas), how a write transaction starts, upserts, which errors are
worth retrying, and how a migration is protected.

SQLite notes:

* the driver's own transaction handling is switched off and the engine emits ``BEGIN``
  itself, so that DDL is transactional (a failed migration is rolled back) and so that
  write transactions start with ``BEGIN IMMEDIATE``: a write transaction then takes the
  write lock at once, waiting for it up to the busy time-out, instead of failing with
  "database is locked" when a read transaction tries to become a write transaction;
* WAL journal (readers don't block the writer), ``synchronous=NORMAL`` (safe with WAL:
  a power loss may lose the last transactions, never corrupt the file), foreign keys on;
* the file is created mode 0600 in a folder mode 0700: it holds private data.
"""

import os
import sqlite3
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    LargeBinary,
    Table,
    bindparam,
    cast,
    column,
    create_engine,
    event,
    func,
    literal_column,
    table,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql.dml import Insert

from libervia.backend.core.config import Config
from libervia.backend.core.exceptions import ConfigError, StartupError
from libervia.backend.core.log import getLogger

log = getLogger(__name__)

T = TypeVar("T")

DB_FILE_NAME = "libervia.db"
#: largest count or position a query takes on both engines (PostgreSQL binds an
#: ``Integer`` parameter, a LIMIT for instance, as 32 bits): a larger one fails in the
#: driver or the server
MAX_SQL_INTEGER = 2**31 - 1
#: execution option marking a connection whose transactions will write
WRITE_OPTION = "libervia_write"


def database_url(config: Config) -> URL:
    """Return the URL of the database configured for the backend.

    ``[storage] url`` when set, else the SQLite file ``{local_dir}/libervia.db``.
    """
    url = config.get("storage", "url")
    if not url:
        return URL.create("sqlite", database=str(config.local_dir / DB_FILE_NAME))
    try:
        return make_url(url)
    except Exception as e:
        raise ConfigError(f"invalid value for key 'url' of section [storage]: {e}") from None


class DatabaseEngine:
    """Base class of the engines: see the module documentation."""

    #: SQLAlchemy dialect name
    name = ""
    #: threads of the storage's pool when not told otherwise
    default_threads = 4

    def __init__(self, url: URL) -> None:
        self.url = url

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url.render_as_string(hide_password=True)}>"

    def prepare(self) -> None:
        """Do what must be done before the first connection (create folders...)."""

    def create_sa_engine(self, pool_size: int | None = None) -> Engine:
        """Create the SQLAlchemy engine, configured for this database engine."""
        raise NotImplementedError

    def is_transient(self, exc: BaseException) -> bool:
        """Tell whether ``exc`` is an error that may not happen again if retried."""
        return False

    def is_unavailable(self, exc: BaseException) -> bool:
        """Tell whether ``exc`` says the database can't be reached at all (server
        stopped, connection lost, file gone), rather than refusing a statement."""
        return isinstance(exc, DBAPIError) and exc.connection_invalidated

    def upsert(
        self, table: Table, index_elements: Iterable[str], update_columns: Iterable[str]
    ) -> Insert:
        """Return an INSERT updating ``update_columns`` of the existing row on conflict."""
        # both dialects spell it INSERT ... ON CONFLICT (...) DO UPDATE, with the same API
        stmt = self._dialect_insert(table)
        return stmt.on_conflict_do_update(
            index_elements=list(index_elements),
            set_={col: stmt.excluded[col] for col in update_columns},
        )

    def insert_new(self, table: Table) -> Insert:
        """Return an INSERT that leaves out a row conflicting with an existing one on
        any unique constraint (``RETURNING`` then gives no row for it)."""
        return self._dialect_insert(table).on_conflict_do_nothing()

    def _dialect_insert(self, table: Table) -> Any:
        raise NotImplementedError

    def byte_length(self, column: Any) -> Any:
        """SQL expression of the size in bytes of a text column's value."""
        return func.octet_length(column)

    def fulltext_search(self, words: list[str], bodies: bool = False
                        ) -> tuple[Any, Any, Any]:
        """How to find the items (or, with ``bodies``, the message bodies of the
        history) whose text holds every word of ``words``.

        :return: ``(join, condition, score)``: a FROM clause to join with
            ``pubsub_items`` (``history_bodies``), or None, the WHERE condition, and a
            score expression, higher for better matches; the words are bound parameters
        """
        raise NotImplementedError

    @contextmanager
    def migration_connection(self, sa_engine: Engine) -> Iterator[Connection]:
        """Give a connection suitable to run migrations on, outside of any transaction."""
        with sa_engine.connect() as conn:
            yield conn

    def read_with_cursor(self, conn: Any, dialect: Any, read: Callable[..., T],
                         *args: Any) -> T:
        """``read(cursor, *args)`` on a cursor of the driver's connection ``conn``,
        for reads only.

        For the hottest reads (a page of a cached node, for every request a frontend
        sends): statements compiled once run on the driver itself, without
        SQLAlchemy's per-statement work.  Several statements that must see the same
        data are run after :meth:`begin_read`; the transaction is rolled back at the
        end (nothing was written).  Driver errors come out as SQLAlchemy's
        ``DBAPIError`` (``connection_invalidated`` when the connection can't be used
        any more), so that retries apply as usual.
        """
        # no context manager: its generator would triple what this wrapper costs
        cursor = conn.cursor()
        try:
            try:
                return read(cursor, *args)
            finally:
                cursor.close()
                conn.rollback()
        except dialect.loaded_dbapi.Error as e:
            dbapi_error = dialect.loaded_dbapi.Error
            raise DBAPIError.instance(
                None, None, e, dbapi_error, dialect=dialect,
                connection_invalidated=dialect.is_disconnect(e, conn, cursor),
            ) from e

    def begin_read(self, cursor: Any) -> None:
        """Start a transaction on a cursor of :meth:`read_with_cursor` (drivers usually
        do)."""

    def check_integrity(self, conn: Connection) -> None:
        """Raise if the database is inconsistent (called before a migration commits)."""

    @property
    def file_path(self) -> Path | None:
        """Path of the database file, for engines that have one."""
        return None


def _sqlite_error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


class SqliteEngine(DatabaseEngine):
    name = "sqlite"
    default_threads = 4
    #: how long a connection waits for a lock held by another one
    busy_timeout = 30.0

    def __init__(self, url: URL) -> None:
        super().__init__(url)
        if not url.database or url.database == ":memory:":
            raise ConfigError(
                "the SQLite database must be a file: the storage uses several connections "
                "from several threads; set [storage] url to sqlite:////path/to/libervia.db"
            )

    @property
    def file_path(self) -> Path:
        return Path(self.url.database).absolute()

    def prepare(self) -> None:
        try:
            self._prepare()
        except OSError as e:
            raise StartupError(
                f"can't open the database {self.file_path}: {e.strerror or e}; check "
                "that [DEFAULT] local_dir (or [storage] url) names a folder the "
                "backend's user may write to"
            ) from e
        except sqlite3.DatabaseError as e:
            raise StartupError(
                f"can't open the database {self.file_path}: {e}; if the file is damaged, "
                "restore one of its copies (libervia.db.bak-*) beside it"
            ) from e

    def _prepare(self) -> None:
        path = self.file_path
        folder = path.parent
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
            # explicit: the umask may be anything (even one leaving out the x bit)
            folder.chmod(0o700)
        folder_stat = folder.stat()
        if folder_stat.st_mode & stat.S_ISVTX or folder_stat.st_uid != os.geteuid():
            # a shared folder (/tmp...) is not ours to restrict: the file itself is 0600
            if stat.S_IMODE(folder_stat.st_mode) & 0o077:
                log.warn("the database folder {folder} is shared with other users; the "
                         "database file is private, but prefer a private folder",
                         folder=folder)
        else:
            self._restrict(folder, 0o700)
        if not path.exists():
            # created here, empty (a valid SQLite database), so that it never exists
            # with wider permissions, even for an instant
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._restrict(path, 0o600)
        for suffix in ("-wal", "-shm"):
            sidecar = path.with_name(path.name + suffix)
            if sidecar.exists():
                self._restrict(sidecar, 0o600)
        # WAL is a property of the file: set it once, before the pool opens connections
        conn = sqlite3.connect(path, timeout=self.busy_timeout)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        finally:
            conn.close()
        if mode.lower() != "wal":
            log.warn("SQLite database {path} could not use WAL journal (got {mode})",
                     path=path, mode=mode)

    @staticmethod
    def _restrict(path: Path, mode: int) -> None:
        current = stat.S_IMODE(path.stat().st_mode)
        if current & ~mode:
            log.info("restricting permissions of {path} from {old:o} to {new:o}",
                     path=path, old=current, new=mode)
            try:
                path.chmod(mode)
            except OSError as e:
                raise StartupError(
                    f"can't restrict permissions of {path} to {mode:o}: {e.strerror}; "
                    "make the backend's user its owner"
                ) from e

    def create_sa_engine(self, pool_size: int | None = None) -> Engine:
        pool_size = pool_size or self.default_threads
        engine = create_engine(
            self.url,
            pool_size=pool_size,
            max_overflow=2,
            connect_args={"timeout": self.busy_timeout, "check_same_thread": False},
        )
        busy_ms = int(self.busy_timeout * 1000)

        @event.listens_for(engine, "connect")
        def on_connect(dbapi_conn: Any, record: Any) -> None:
            # the driver must not open transactions behind our back (see module doc)
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
                cursor.execute("PRAGMA foreign_keys = ON")
                cursor.execute("PRAGMA synchronous = NORMAL")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def on_begin(conn: Connection) -> None:
            if conn.get_execution_options().get(WRITE_OPTION):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

        return engine

    def begin_read(self, cursor: Any) -> None:
        # the driver's transaction handling is off (see on_connect): without BEGIN,
        # each statement is a transaction of its own
        cursor.execute("BEGIN")

    def is_transient(self, exc: BaseException) -> bool:
        orig = exc.orig if isinstance(exc, DBAPIError) else exc
        if not isinstance(orig, sqlite3.OperationalError):
            return False
        if _sqlite_error_code(orig) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return True
        message = str(orig).lower()
        return "database is locked" in message or "database table is locked" in message

    def is_unavailable(self, exc: BaseException) -> bool:
        orig = exc.orig if isinstance(exc, DBAPIError) else exc
        return super().is_unavailable(exc) or _sqlite_error_code(orig) in (
            sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR)

    def byte_length(self, column: Any) -> Any:
        # length() counts characters of a text, bytes of a blob
        return func.length(cast(column, LargeBinary))

    def fulltext_search(self, words: list[str], bodies: bool = False
                        ) -> tuple[Any, Any, Any]:
        from libervia.backend.memory import sqla_mapping as mapping

        name, row_id = (mapping.HISTORY_FULLTEXT_TABLE, mapping.HistoryBody.id) if (
            bodies) else (mapping.FULLTEXT_TABLE, mapping.PubsubItem.id)
        fts = table(name, column("rowid"))
        # every word as a quoted string: FTS5 query syntax (NEAR, *, column:...) is
        # not for users to stumble on
        query = " ".join('"' + word.replace('"', '""') + '"' for word in words)
        fts_name = literal_column(name)
        return (
            (fts, fts.c.rowid == row_id),
            fts_name.op("MATCH")(bindparam("fulltext_query", query)),
            # bm25 is lower for better matches
            -func.bm25(fts_name),
        )

    def _dialect_insert(self, table: Table) -> Any:
        from sqlalchemy.dialects.sqlite import insert

        return insert(table)

    @contextmanager
    def migration_connection(self, sa_engine: Engine) -> Iterator[Connection]:
        # Alembic's batch mode re-creates a table by copying it and dropping the
        # original: with foreign keys on, the drop would cascade and delete the rows
        # of every table referring to it.  The pragma is a no-op inside a transaction,
        # so it is set on the driver's connection, before anything begins.
        with sa_engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            raw.execute("PRAGMA foreign_keys = OFF")
            try:
                yield conn
            finally:
                raw.execute("PRAGMA foreign_keys = ON")

    def check_integrity(self, conn: Connection) -> None:
        violations = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if violations:
            tables = sorted({row[0] for row in violations})
            raise StartupError(
                f"the migration would leave {len(violations)} broken foreign key(s) in "
                f"table(s) {', '.join(tables)}; it was rolled back"
            )

    def backup(self, destination: Path) -> None:
        """Copy the database to ``destination`` (mode 0600) with SQLite's backup API."""
        os.close(os.open(destination, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        self._copy(self.file_path, destination)

    def restore(self, source: Path) -> None:
        """Replace the content of the database with the backup ``source``."""
        self._copy(source, self.file_path)

    def _copy(self, source: Path, destination: Path) -> None:
        src = sqlite3.connect(source, timeout=self.busy_timeout)
        try:
            dst = sqlite3.connect(destination, timeout=self.busy_timeout)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()


class PostgresEngine(DatabaseEngine):
    name = "postgresql"
    default_threads = 8
    #: SQLSTATE of errors that a new attempt may not meet
    TRANSIENT_SQLSTATES = frozenset({
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
    })

    def create_sa_engine(self, pool_size: int | None = None) -> Engine:
        """The SQLAlchemy engine.

        :raise StartupError: the URL's driver is not installed (the ``postgresql``
            extra of the backend installs psycopg)
        """
        pool_size = pool_size or self.default_threads
        try:
            return create_engine(
                self.url, pool_size=pool_size, max_overflow=2, pool_pre_ping=True
            )
        except ImportError as e:
            raise StartupError(_missing_driver(self.url, e)) from None

    def is_transient(self, exc: BaseException) -> bool:
        orig = exc.orig if isinstance(exc, DBAPIError) else exc
        # psycopg 3 names it sqlstate, psycopg2 pgcode
        code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        return code in self.TRANSIENT_SQLSTATES

    def is_unavailable(self, exc: BaseException) -> bool:
        if super().is_unavailable(exc):
            return True
        if not isinstance(exc, OperationalError):
            return False
        orig = exc.orig
        code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        # no SQLSTATE: the connection could not be made; class 08: connection
        # exception; class 57: the server is shutting down or starting
        return code is None or code[:2] in ("08", "57")

    def fulltext_search(self, words: list[str], bodies: bool = False
                        ) -> tuple[Any, Any, Any]:
        from libervia.backend.memory import sqla_mapping as mapping

        # written as in the index definition, so that the index is used
        config = literal_column(f"'{mapping.FULLTEXT_PG_CONFIG}'")
        text = mapping.HistoryBody.text if bodies else mapping.PubsubItem.data
        vector = func.to_tsvector(config, text)
        query = func.plainto_tsquery(
            config, bindparam("fulltext_query", " ".join(words)))
        return None, vector.op("@@")(query), func.ts_rank(vector, query)

    def _dialect_insert(self, table: Table) -> Any:
        from sqlalchemy.dialects.postgresql import insert

        return insert(table)


def _missing_driver(url: URL, error: ImportError) -> str:
    """What to install for a PostgreSQL URL whose driver can't be imported."""
    module = error.name or "the driver"
    if url.drivername == "postgresql+psycopg":
        return (
            f"the database of [storage] url is PostgreSQL, but its driver ({module}) is "
            "not installed: install the backend's postgresql extra "
            "(pip install 'libervia-backend[postgresql]'), or leave [storage] url unset "
            "for SQLite"
        )
    return (
        f"the database of [storage] url needs the driver {module}, which is not "
        f"installed ({url.drivername}): write the URL postgresql+psycopg://USER@HOST/"
        "DATABASE and install the backend's postgresql extra "
        "(pip install 'libervia-backend[postgresql]')"
    )


ENGINES: dict[str, type[DatabaseEngine]] = {
    SqliteEngine.name: SqliteEngine,
    PostgresEngine.name: PostgresEngine,
}


def create_database_engine(url: str | URL) -> DatabaseEngine:
    """Return the :class:`DatabaseEngine` handling ``url``.

    :raise ConfigError: the URL names a database the backend does not support
    """
    if isinstance(url, str):
        url = make_url(url)
    backend = url.get_backend_name()
    engine_cls = ENGINES.get(backend)
    if engine_cls is None:
        raise ConfigError(
            f"unsupported database {backend!r} in [storage] url; use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DATABASE"
        )
    return engine_cls(url)
