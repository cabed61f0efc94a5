"""Alembic environment of the backend's database.

Two ways in:

* the backend (:mod:`libervia.backend.memory.schema`) hands over a connection, already
  in a transaction, through ``config.attributes["connection"]``;
* the ``alembic`` command, run from this folder: the URL is the backend's (read with
  :meth:`Config.load`, so ``LIBERVIA_CONFIG`` is honoured) unless ``-x url=...`` is
  given, and the whole run is one transaction.
"""

import logging.config
from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext

from libervia.backend.core.config import Config
from libervia.backend.memory.engines import create_database_engine, database_url
from libervia.backend.memory.schema import include_name
from libervia.backend.memory.sqla_mapping import Base, JSONDocument, UTCDateTime

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> Any:
    # revisions must not import the mapping: they have to keep working when it changes
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, type(JSONDocument)):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return ("sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "
                "'postgresql')")
    return False


def configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        # batch operations are plain ALTERs on PostgreSQL and table copies on SQLite:
        # rendered always, a revision runs on both engines whoever generated it
        render_as_batch=True,
        compare_type=True,
        render_item=render_item,
        include_name=include_name,
        **kwargs,
    )


def cli_url() -> Any:
    url = context.get_x_argument(as_dictionary=True).get("url")
    return url or database_url(Config.load())


def run_migrations_offline() -> None:
    configure(url=cli_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    if config.config_file_name is not None:
        logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)
    engine = create_database_engine(cli_url())
    engine.prepare()
    sa_engine = engine.create_sa_engine(pool_size=1)
    try:
        with engine.migration_connection(sa_engine) as conn, conn.begin():
            configure(connection=conn)
            context.run_migrations()
            engine.check_integrity(conn)
    finally:
        sa_engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
