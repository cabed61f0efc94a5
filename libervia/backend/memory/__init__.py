"""Persistent state of the backend: ORM mapping, storage API, migrations.

* :mod:`~libervia.backend.memory.sqla_mapping`: tables, as SQLAlchemy typed mapping;
* :mod:`~libervia.backend.memory.engines`: what differs between SQLite and PostgreSQL;
* :mod:`~libervia.backend.memory.storage`: :class:`Storage`, the high-level API: a
  runner (every call on the storage's own thread pool) and one component per domain
  (``storage.profiles``, ``storage.pubsub``, ``storage.search``);
* :mod:`~libervia.backend.memory.schema`: revision checks, backups and migrations;
* :mod:`~libervia.backend.memory.service`: :class:`StorageService`, which opens and
  migrates the database when the backend starts.
"""
