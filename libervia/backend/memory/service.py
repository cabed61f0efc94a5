"""The storage service: opens and migrates the database when the backend starts.

It is the first part of the backend to start (see :mod:`libervia.backend.app.main`):
plugins are loaded only once the database is at the head revision.  It stops last,
after every call in flight has finished.
"""

from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer

from libervia.backend.core.config import Config
from libervia.backend.core.log import getLogger
from libervia.backend.memory import schema
from libervia.backend.memory.engines import database_url
from libervia.backend.memory.storage import Storage

log = getLogger(__name__)


class StorageService(service.Service):
    """Service owning the :class:`~libervia.backend.memory.storage.Storage`.

    :param config: backend configuration (``[storage] url``, ``local_dir``)
    :param reactor: reactor to use (injected by tests)
    :param url: database URL overriding the configuration (tests)
    :param keep_backups: SQLite copies kept before migrations
    :param storage_kwargs: more arguments for :class:`Storage`
    """

    name = "storage"

    def __init__(
        self,
        config: Config,
        *,
        reactor: Any = None,
        url: str | None = None,
        keep_backups: int = schema.KEEP_BACKUPS,
        script_location: Path | None = None,
        **storage_kwargs: Any,
    ) -> None:
        self.keep_backups = keep_backups
        #: the storage, usable once the service has started
        self.storage = Storage(
            url if url is not None else database_url(config),
            reactor=reactor,
            script_location=script_location,
            **storage_kwargs,
        )
        #: what the last start-up did to the schema
        self.migration: schema.MigrationReport | None = None

    def startService(self) -> defer.Deferred:
        super().startService()
        return defer.ensureDeferred(self._start())

    async def _start(self) -> None:
        storage = self.storage
        log.info("opening database {engine}", engine=storage.db_engine)
        await storage.start()
        try:
            report = await storage.migrate(self.keep_backups)
        except BaseException:
            await storage.stop()
            raise
        self.migration = report
        if report.action == "created":
            log.info("database created at schema revision {rev}", rev=report.to_revision)
        elif report.action == "upgraded":
            log.info(
                "database upgraded from schema revision {old} to {new}{backup}",
                old=report.from_revision, new=report.to_revision,
                backup=f" (copy of the old one: {report.backup})" if report.backup else "",
            )
        else:
            log.debug("database at schema revision {rev}", rev=report.to_revision)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return self.storage.stop()
