"""The storage connector: the runner and one component per domain.

As buildbot's ``db.connector``: :class:`Storage` owns a
:class:`~.runner.StorageRunner` (threads, transactions, retries, timings) and holds the
domain components that callers use, each a small module whose methods call the runner:

* ``storage.profiles`` (:mod:`.profiles`): profiles, parameters, private values;
* ``storage.pubsub`` (:mod:`.pubsub`): cached pubsub nodes and items, sync states,
  cache statistics;
* ``storage.search`` (:mod:`.search`): search over cached items;
* ``storage.caps`` (:mod:`.caps`): verified entity capabilities (XEP-0115);
* ``storage.roster`` (:mod:`.roster`): rosters, their versions, subscription requests;
* ``storage.history`` (:mod:`.history`): the messages sent and received.
"""

from typing import Any

from sqlalchemy.engine import URL
from twisted.internet import defer

from libervia.backend.memory import schema
from libervia.backend.memory.engines import DatabaseEngine
from libervia.backend.memory.storage.caps import CapsComponent
from libervia.backend.memory.storage.history import HistoryComponent
from libervia.backend.memory.storage.profiles import ProfilesComponent
from libervia.backend.memory.storage.pubsub import PubsubComponent
from libervia.backend.memory.storage.roster import RosterComponent
from libervia.backend.memory.storage.runner import CallStats, StorageRunner
from libervia.backend.memory.storage.search import SearchComponent


class Storage:
    """The backend's database: life cycle here, data through the components.

    :param url: SQLAlchemy URL of the database (see
        :func:`~libervia.backend.memory.engines.database_url`)
    :param options: the runner's (threads, reactor, retries, Alembic scripts): see
        :class:`~.runner.StorageRunner`
    """

    def __init__(self, url: str | URL, **options: Any) -> None:
        #: threads, transactions, retries and timings; plugins with queries of their
        #: own call its ``run_in_session``
        self.runner = StorageRunner(url, **options)
        #: profiles, parameters and private values
        self.profiles = ProfilesComponent(self.runner)
        #: cached pubsub nodes and items
        self.pubsub = PubsubComponent(self.runner)
        #: search over cached items
        self.search = SearchComponent(self.runner)
        #: verified entity capabilities
        self.caps = CapsComponent(self.runner)
        #: rosters and subscription requests
        self.roster = RosterComponent(self.runner)
        #: the messages sent and received
        self.history = HistoryComponent(self.runner)

    def __repr__(self) -> str:
        return f"<Storage {self.db_engine!r}>"

    @property
    def db_engine(self) -> DatabaseEngine:
        """What differs between SQLite and PostgreSQL, for this database."""
        return self.runner.db_engine

    @property
    def timings(self) -> dict[str, CallStats]:
        """Statistics of the calls made, by call name."""
        return self.runner.timings

    @property
    def running(self) -> bool:
        return self.runner.running

    def start(self) -> defer.Deferred:
        """Start the threads and open the database (folder, permissions, engine)."""
        return self.runner.start()

    def stop(self) -> defer.Deferred:
        """Refuse new calls, wait for those in flight, then stop the threads."""
        return self.runner.stop()

    def migrate(self, keep_backups: int = schema.KEEP_BACKUPS) -> defer.Deferred:
        """Create or upgrade the schema to the head revision (see
        :meth:`~.runner.StorageRunner.migrate`)."""
        return self.runner.migrate(keep_backups)
