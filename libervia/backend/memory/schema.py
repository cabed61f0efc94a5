"""Schema revisions: creating, checking and migrating the database at start-up.

:func:`thd_migrate` runs in a storage thread (see :meth:`.sqla.Storage.migrate`) on a
connection given by :meth:`.engines.DatabaseEngine.migration_connection`:

* no table yet: the schema is created from the mapping and stamped at the head revision;
* at head: nothing to do;
* behind head: SQLite files are first copied with SQLite's backup API to
  ``libervia.db.bak-<old revision>-<UTC time>`` (the last few are kept), then Alembic
  upgrades the database in one transaction, so a failure leaves it as it was (and, if
  that still went wrong, an SQLite file is restored from the copy);
* unknown revision (written by a newer backend), or our tables without any revision:
  :class:`StartupError` saying what to do.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect

from libervia.backend.core.exceptions import StartupError
from libervia.backend.core.log import getLogger
from libervia.backend.memory.engines import DatabaseEngine, SqliteEngine
from libervia.backend.memory.sqla_mapping import Base

log = getLogger(__name__)

#: folder of alembic.ini, env.py and versions/
SCRIPT_LOCATION = Path(__file__).parent / "migration"
BACKUP_INFIX = ".bak-"
#: backups kept by default (older ones are deleted after a new one is made)
KEEP_BACKUPS = 3


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`thd_migrate` did."""

    #: "created", "upgraded" or "none"
    action: str
    from_revision: str | None
    to_revision: str
    backup: Path | None = None


def alembic_config(
    script_location: Path | None = None, connection: Connection | None = None
) -> AlembicConfig:
    """Alembic configuration for in-process use, optionally bound to ``connection``."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(script_location or SCRIPT_LOCATION))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision(script_location: Path | None = None) -> str:
    """Return the single head revision of the migration scripts."""
    script = ScriptDirectory.from_config(alembic_config(script_location))
    heads = script.get_heads()
    if len(heads) != 1:
        raise StartupError(
            f"the migration scripts have {len(heads)} heads ({', '.join(heads)}): merge "
            "them with `alembic merge heads` before starting the backend"
        )
    return heads[0]


def thd_current_revision(conn: Connection) -> str | None:
    """Return the revision the database is stamped with (``None``: not stamped)."""
    with conn.begin():
        return MigrationContext.configure(conn).get_current_revision()


def backup_name(db_path: Path, revision: str, now: datetime) -> Path:
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return db_path.with_name(f"{db_path.name}{BACKUP_INFIX}{revision}-{stamp}")


def list_backups(db_path: Path) -> list[Path]:
    """Backups of ``db_path``, oldest first."""
    found = db_path.parent.glob(f"{db_path.name}{BACKUP_INFIX}*")
    # the name ends with the time stamp, which sorts chronologically
    return sorted(found, key=lambda p: p.name.rsplit("-", 1)[-1])


def prune_backups(db_path: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` most recent backups; return the deleted ones."""
    backups = list_backups(db_path)
    removed = backups[:-keep] if keep > 0 else backups
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def thd_migrate(
    conn: Connection,
    db_engine: DatabaseEngine,
    script_location: Path | None = None,
    keep_backups: int = KEEP_BACKUPS,
    now: datetime | None = None,
) -> MigrationReport:
    """Bring the database to the head revision (see the module documentation).

    :param conn: connection outside of any transaction, from
        :meth:`DatabaseEngine.migration_connection`
    :raise StartupError: the database can't be used by this version of the backend, or
        the migration failed (the message says what to do)
    """
    head = head_revision(script_location)
    current = thd_current_revision(conn)

    if current is None:
        with conn.begin():
            tables = set(inspect(conn).get_table_names())
            ours = tables & set(Base.metadata.tables)
            if ours:
                raise StartupError(
                    f"the database {db_engine!r} has tables of the backend "
                    f"({', '.join(sorted(ours))}) but no schema revision: it was not "
                    "created by this backend. Point [storage] url to an empty database, "
                    "or stamp this one with `alembic stamp <revision>` if you know its "
                    "revision"
                )
            Base.metadata.create_all(conn)
            command.stamp(alembic_config(script_location, conn), head)
        return MigrationReport("created", None, head)

    if current == head:
        return MigrationReport("none", current, head)

    script = ScriptDirectory.from_config(alembic_config(script_location))
    try:
        known = script.get_revision(current) is not None
    except CommandError:
        known = False
    if not known:
        raise StartupError(
            f"the database {db_engine!r} is at schema revision {current}, which this "
            f"version of the backend does not know (its latest is {head}): it was "
            "probably written by a newer version. Run that newer version again, or "
            f"downgrade the database with its `alembic downgrade {head}`, or restore a "
            "backup made before the upgrade"
        )

    backup = None
    if isinstance(db_engine, SqliteEngine):
        backup = backup_name(db_engine.file_path, current, now or datetime.now(UTC))
        db_engine.backup(backup)
        prune_backups(db_engine.file_path, keep_backups)

    try:
        with conn.begin():
            command.upgrade(alembic_config(script_location, conn), head)
            db_engine.check_integrity(conn)
    except Exception as e:
        restored = _ensure_revision(conn, db_engine, current, backup)
        where = f"; a copy made before is {backup}" if backup is not None else ""
        raise StartupError(
            f"migration of the database from revision {current} to {head} failed "
            f"({type(e).__name__}: {e}); the database was left at revision {current}"
            f"{' (restored from the copy)' if restored else ''}{where}. Please report "
            "this error with the backend's log"
        ) from e
    return MigrationReport("upgraded", current, head, backup)


def _ensure_revision(
    conn: Connection, db_engine: DatabaseEngine, revision: str, backup: Path | None
) -> bool:
    """After a failed migration, check the rollback; restore the backup if needed.

    :return: True if the backup was restored
    """
    try:
        after = thd_current_revision(conn)
    except Exception:
        after = None
    if after == revision or backup is None or not isinstance(db_engine, SqliteEngine):
        return False
    log.error("the failed migration was not rolled back: restoring {backup}", backup=backup)
    db_engine.restore(backup)
    return True
