"""Persistent state of the backend: ORM mapping, storage API, migrations.

* :mod:`~libervia.backend.memory.sqla_mapping`: tables, as SQLAlchemy typed mapping;
* :mod:`~libervia.backend.memory.engines`: what differs between SQLite and PostgreSQL;
* :mod:`~libervia.backend.memory.sqla`: :class:`Storage`, the high-level API, every call
  running on the storage's own thread pool;
* :mod:`~libervia.backend.memory.schema`: revision checks, backups and migrations;
* :mod:`~libervia.backend.memory.service`: :class:`StorageService`, which opens and
  migrates the database when the backend starts.
"""
