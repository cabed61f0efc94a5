"""What the crash and fault tests share: a backend process, and checks of its database.

The checks open their own SQLAlchemy engine on the database (never the backend's): they
see what a backend starting on it would see.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from twisted.internet import defer, threads

from tests.support import BackendProcess, backend_env, venv_script, write_config

#: set to run the crash tests with their full sizes (larger nodes, larger databases)
FULL_ENV = "LIBERVIA_RELIABILITY_FULL"


def full_size() -> bool:
    return os.environ.get(FULL_ENV, "").lower() in ("1", "true", "yes")


def sized(ci: int, full: int) -> int:
    """``full`` when the full sizes are asked for (see :data:`FULL_ENV`), else ``ci``."""
    return full if full_size() else ci


def is_sqlite(db_url: str) -> bool:
    return make_url(db_url).get_backend_name() == "sqlite"


def start_backend_process(tmp_path: Path, local_dir: Path, db_url: str, socket: Path,
                          settings: dict[str, dict[str, Any]] | None = None
                          ) -> BackendProcess:
    """Start ``libervia-backend`` with a configuration file written for it."""
    sections: dict[str, dict[str, Any]] = {
        "DEFAULT": {"local_dir": local_dir},
        "bridge": {"socket": socket},
        "storage": {"url": db_url},
    }
    for section, values in (settings or {}).items():
        sections.setdefault(section, {}).update(values)
    config = tmp_path / "backend.conf"
    write_config(config, sections)
    return BackendProcess(
        [venv_script("libervia-backend"), "--config", str(config), "--log-level", "info"],
        env=backend_env(tmp_path), cwd=tmp_path)


def kill(process: BackendProcess) -> None:
    """SIGKILL: no clean-up code of the backend runs."""
    status = process.stop(signal.SIGKILL)
    assert status == -signal.SIGKILL, process.output


def poll(check: Callable[[], Any], what: str, timeout: float = 120,
         interval: float = 0.02) -> Any:
    """Call the blocking ``check()`` until it is truthy; return its result."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def poll_in_thread(check: Callable[[], Any], what: str, timeout: float = 120
                   ) -> defer.Deferred:
    """:func:`poll` in a thread, out of the reactor's way."""
    return threads.deferToThread(poll, check, what, timeout)


class DatabaseProbe:
    """A connection of the test's own to the backend's database."""

    def __init__(self, db_url: str) -> None:
        self.url = db_url
        self.sqlite = is_sqlite(db_url)
        # NullPool: nothing stays open between two checks (a SQLite file can be
        # inspected while the backend is dead, a PostgreSQL server stopped)
        self.engine = sa.create_engine(db_url, poolclass=sa.NullPool)

    def close(self) -> None:
        self.engine.dispose()

    def scalar(self, query: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(query), params).scalar()

    def rows(self, query: str, **params: Any) -> list[tuple]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(query), params)]

    def node(self, name: str) -> tuple[str | None, int, int] | None:
        """``(sync_state, sync_items_done, items stored)`` of a node, or None."""
        found = self.rows(
            "SELECT n.sync_state, n.sync_items_done, "
            "(SELECT count(*) FROM pubsub_items i WHERE i.node_id = n.id) "
            "FROM pubsub_nodes n WHERE n.name = :name", name=name)
        return found[0] if found else None

    def locked_by_a_writer(self) -> bool:
        """Whether another connection is in the middle of a transaction changing the
        schema or writing (what a migration does from its first statement on)."""
        if self.sqlite:
            conn = sqlite3.connect(make_url(self.url).database, timeout=0)
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return True
            finally:
                conn.close()
            return False
        return bool(self.scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE a.datname = current_database() AND l.pid <> pg_backend_pid() "
            "AND l.granted AND l.locktype = 'relation' "
            "AND l.mode IN ('ShareLock', 'AccessExclusiveLock')"))

    def assert_consistent(self) -> None:
        """The file is sound and the constraints hold: what a crash must never break."""
        if self.sqlite:
            assert self.rows("PRAGMA integrity_check") == [("ok",)]
            assert self.rows("PRAGMA foreign_key_check") == []
        else:
            # every constraint is enforced at each commit: a row breaking one can only
            # come from a damaged server; check the ones the cache relies on anyway
            orphans = self.scalar(
                "SELECT count(*) FROM pubsub_items i LEFT JOIN pubsub_nodes n "
                "ON n.id = i.node_id WHERE n.id IS NULL")
            assert orphans == 0
            invalid = self.rows(
                "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid")
            assert invalid == []
        duplicates = self.rows(
            "SELECT node_id, name, count(*) FROM pubsub_items GROUP BY node_id, name "
            "HAVING count(*) > 1")
        assert duplicates == []
