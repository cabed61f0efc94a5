"""ORM mapping of the backend's database (SQLAlchemy 2.x typed declarative).

Every change here needs an Alembic revision (see ``doc/developer/storage.rst``); a test
checks that the mapping and the migrations describe the same schema.

Objects of this mapping leave the storage's threads: :class:`~.storage.Storage` returns
them detached from their session with every column loaded, so they can be read
anywhere.  Relationships are never loaded implicitly (``lazy="raise"``): touching one
that the storage did not load raises at once instead of emitting SQL from the reactor
thread.
"""

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

#: constraint names are explicit so that migrations can find them on every engine
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

class _JSONDocument(TypeDecorator):
    """JSON documents: plain JSON on SQLite, JSONB (indexable, comparable) on
    PostgreSQL.

    The PostgreSQL type is loaded only for PostgreSQL: importing its dialect costs a
    tenth of a backend's start on SQLite.
    """

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


#: the type of JSON document columns
JSONDocument = _JSONDocument()


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Time stamp always stored in UTC and always read back time zone aware.

    SQLite has no time zone aware type: values are stored there as naive UTC.  Naive
    values given by callers are taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class SyncState(enum.Enum):
    """Synchronisation state of a cached pubsub node (``None``: not synchronised)."""

    IN_PROGRESS = 1
    COMPLETED = 2
    ERROR = 3
    NO_SYNC = 4


class Profile(Base):
    """An account of the backend's user (one XMPP identity)."""

    __tablename__ = "profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<Profile {self.id} {self.name!r}>"


class ParamGen(Base):
    """General (profile independent) parameter value."""

    __tablename__ = "param_gen"

    category: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)


class ParamInd(Base):
    """Parameter value of one profile."""

    __tablename__ = "param_ind"

    category: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    profile_id: Mapped[int] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    value: Mapped[str | None] = mapped_column(Text)


class PrivateGen(Base):
    """General private value of a plugin (``namespace``), stored as JSON text."""

    __tablename__ = "private_gen"

    namespace: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)


class PrivateInd(Base):
    """Private value of a plugin for one profile, stored as JSON text."""

    __tablename__ = "private_ind"

    namespace: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    profile_id: Mapped[int] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    value: Mapped[str | None] = mapped_column(Text)


class PrivateGenBin(Base):
    """General private binary value of a plugin (raw bytes)."""

    __tablename__ = "private_gen_bin"

    namespace: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[bytes | None] = mapped_column(LargeBinary)


class PrivateIndBin(Base):
    """Private binary value of a plugin for one profile (raw bytes)."""

    __tablename__ = "private_ind_bin"

    namespace: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    profile_id: Mapped[int] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    value: Mapped[bytes | None] = mapped_column(LargeBinary)


class PubsubNode(Base):
    """A pubsub node known to the cache, for one profile.

    ``service`` is the bare JID of the pubsub service (the profile's own JID for PEP);
    ``analyser``, ``type_`` and ``subtype`` come from the analyser that recognised the
    node.  ``sync_state`` is ``None`` until a synchronisation starts.
    """

    __tablename__ = "pubsub_nodes"
    __table_args__ = (UniqueConstraint("profile_id", "service", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile_id: Mapped[int] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE")
    )
    service: Mapped[str] = mapped_column(String(3071))
    name: Mapped[str] = mapped_column(String(1023))
    subscribed: Mapped[bool] = mapped_column(Boolean, default=False)
    analyser: Mapped[str | None] = mapped_column(String(255))
    type_: Mapped[str | None] = mapped_column("type", String(255))
    subtype: Mapped[str | None] = mapped_column(String(255))
    sync_state: Mapped[SyncState | None] = mapped_column(
        Enum(SyncState, name="sync_state", native_enum=False, create_constraint=True,
             length=20)
    )
    sync_state_updated: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: items stored so far by the running (or last) synchronisation
    sync_items_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: items the service announced (RSM count), when it did
    sync_items_expected: Mapped[int | None] = mapped_column(Integer)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)

    profile: Mapped[Profile] = relationship(lazy="raise")

    def __repr__(self) -> str:
        return f"<PubsubNode {self.id} {self.service!r} {self.name!r}>"


class PubsubItem(Base):
    """An item of a cached node: the XML as received, and what the analyser parsed."""

    __tablename__ = "pubsub_items"
    __table_args__ = (
        UniqueConstraint("node_id", "name"),
        # pages of a node ordered by creation or modification (see storage.pubsub.get_items)
        Index("ix_pubsub_items_node_id_created", "node_id", "created", "id"),
        Index("ix_pubsub_items_node_id_updated", "node_id", "updated", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("pubsub_nodes.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(1023))
    data: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    parsed: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)

    node: Mapped[PubsubNode] = relationship(lazy="raise")

    def __repr__(self) -> str:
        return f"<PubsubItem {self.id} node={self.node_id} {self.name!r}>"


class DiscoCaps(Base):
    """What an entity capabilities hash (XEP-0115) stands for, once verified.

    ``info`` is the disco#info ``<query/>`` whose hash (``hash_algo``, ``sha-1``...)
    gave ``ver``: the same for every entity announcing that hash, so it is kept once
    for all profiles, and a restart does not ask again.
    """

    __tablename__ = "disco_caps"

    hash_algo: Mapped[str] = mapped_column(String(32), primary_key=True)
    ver: Mapped[str] = mapped_column(String(255), primary_key=True)
    info: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<DiscoCaps {self.hash_algo} {self.ver!r}>"


class RosterVersion(Base):
    """The roster version (XEP-0237) a profile's stored roster is at.

    ``version`` is ``None`` when the server does not version rosters: the stored roster
    is then a copy, downloaded again at each connection.
    """

    __tablename__ = "roster_versions"

    profile_id: Mapped[int] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[str | None] = mapped_column(Text)


class RosterItem(Base):
    """A contact of a profile's roster (RFC 6121), as the server last said it.

    ``subscription`` is ``none``, ``to``, ``from`` or ``both``; ``ask`` is true while
    the profile's own subscription request waits for the contact's answer; ``groups``
    is a JSON list of the group names.
    """

    __tablename__ = "roster_items"
    __table_args__ = (UniqueConstraint("profile_id", "jid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile_id: Mapped[int] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE")
    )
    jid: Mapped[str] = mapped_column(String(3071))
    name: Mapped[str | None] = mapped_column(Text)
    subscription: Mapped[str] = mapped_column(String(8), default="none")
    ask: Mapped[bool] = mapped_column(Boolean, default=False)
    groups: Mapped[list[str]] = mapped_column(JSONDocument, default=list)


class SubscriptionRequest(Base):
    """A contact's request to see the profile's presence, kept until it is answered."""

    __tablename__ = "subscription_requests"
    __table_args__ = (UniqueConstraint("profile_id", "jid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    profile_id: Mapped[int] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE")
    )
    jid: Mapped[str] = mapped_column(String(3071))
    status: Mapped[str | None] = mapped_column(Text)
    received: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HistoryEntry(Base):
    """A message of a profile's history, sent or received (RFC 6121 ``<message/>``).

    ``source`` and ``dest`` are bare JIDs, their resources apart; ``conversation`` is the
    bare JID of the other party (the contact: ``dest`` for a message the account sent,
    ``source`` for one it received).  ``timestamp`` is when the message was sent (a
    delay's time when it came with one), ``received_timestamp`` when the backend got it.
    ``direction`` is ``in`` or ``out``.

    A message is stored once however often it comes (live, as a carbon, from the
    archive): the database refuses a second row with the same ``stanza_id`` (the id the
    account's server gave it, XEP-0359) or the same ``origin_id`` from the same sender.
    """

    __tablename__ = "history"
    __table_args__ = (
        UniqueConstraint("profile_id", "stanza_id"),
        # an origin-id is unique for its sender only: a contact can't shadow another's
        UniqueConstraint("profile_id", "source", "origin_id"),
        # the latest messages of a profile, and of one conversation (history_get)
        Index("ix_history_profile_id_timestamp", "profile_id", "timestamp", "id"),
        Index("ix_history_profile_id_conversation", "profile_id", "conversation",
              "timestamp", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    profile_id: Mapped[int] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE")
    )
    stanza_id: Mapped[str | None] = mapped_column(String(255))
    origin_id: Mapped[str | None] = mapped_column(String(255))
    #: the ``id`` attribute of the ``<message/>``
    message_id: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(3071))
    source_resource: Mapped[str | None] = mapped_column(String(1023))
    dest: Mapped[str] = mapped_column(String(3071))
    dest_resource: Mapped[str | None] = mapped_column(String(1023))
    conversation: Mapped[str] = mapped_column(String(3071))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    received_timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    type_: Mapped[str] = mapped_column("type", String(16))
    direction: Mapped[str] = mapped_column(String(3))
    thread: Mapped[str | None] = mapped_column(String(255))
    thread_parent: Mapped[str | None] = mapped_column(String(255))
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)

    def __repr__(self) -> str:
        return f"<HistoryEntry {self.id} {self.uid} {self.direction} {self.conversation!r}>"


class HistoryBody(Base):
    """A body of a message, in one language (``lang`` is ``""`` when not said)."""

    __tablename__ = "history_bodies"
    __table_args__ = (UniqueConstraint("history_id", "lang"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    history_id: Mapped[int] = mapped_column(ForeignKey("history.id", ondelete="CASCADE"))
    lang: Mapped[str] = mapped_column(String(64), default="")
    text: Mapped[str] = mapped_column(Text)


class HistorySubject(Base):
    """A subject of a message, in one language (``lang`` is ``""`` when not said)."""

    __tablename__ = "history_subjects"
    __table_args__ = (UniqueConstraint("history_id", "lang"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    history_id: Mapped[int] = mapped_column(ForeignKey("history.id", ondelete="CASCADE"))
    lang: Mapped[str] = mapped_column(String(64), default="")
    text: Mapped[str] = mapped_column(Text)


# Full-text search of cached items.  The ORM can't describe these objects (an FTS5
# virtual table kept in step by triggers on SQLite, an expression index on PostgreSQL),
# so they are DDL run after the creation of pubsub_items, and Alembic's comparison
# leaves them out (see is_fulltext_object).  The revision that added them runs the same
# statements; a later revision re-creating pubsub_items on SQLite (batch mode) must
# re-create the triggers.

FULLTEXT_TABLE = "pubsub_items_fts"
FULLTEXT_INDEX = "ix_pubsub_items_fts"
#: text search configuration of PostgreSQL: no stemming, no stop words, any language
FULLTEXT_PG_CONFIG = "simple"

def fulltext_ddl(table: Any, column: str, fts_table: str, index: str
                 ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The statements indexing ``table.column`` for full-text search, for SQLite (an
    FTS5 table over it, kept in step by triggers) and for PostgreSQL (an expression
    index); run after the creation of ``table``."""
    name = table.name
    sqlite = (
        f"CREATE VIRTUAL TABLE {fts_table} USING fts5("
        f"{column}, content='{name}', content_rowid='id')",
        f"CREATE TRIGGER {fts_table}_ai AFTER INSERT ON {name} BEGIN "
        f"INSERT INTO {fts_table}(rowid, {column}) VALUES (new.id, new.{column}); END",
        f"CREATE TRIGGER {fts_table}_ad AFTER DELETE ON {name} BEGIN "
        f"INSERT INTO {fts_table}({fts_table}, rowid, {column}) "
        f"VALUES ('delete', old.id, old.{column}); END",
        f"CREATE TRIGGER {fts_table}_au AFTER UPDATE OF {column} ON {name} BEGIN "
        f"INSERT INTO {fts_table}({fts_table}, rowid, {column}) "
        f"VALUES ('delete', old.id, old.{column}); "
        f"INSERT INTO {fts_table}(rowid, {column}) VALUES (new.id, new.{column}); END",
    )
    postgresql = (
        f"CREATE INDEX {index} ON {name} "
        f"USING gin (to_tsvector('{FULLTEXT_PG_CONFIG}', {column}))",
    )
    for dialect, statements in (("sqlite", sqlite), ("postgresql", postgresql)):
        for statement in statements:
            event.listen(table, "after_create", DDL(statement).execute_if(dialect=dialect))
    return sqlite, postgresql


SQLITE_FULLTEXT_DDL, POSTGRESQL_FULLTEXT_DDL = fulltext_ddl(
    PubsubItem.__table__, "data", FULLTEXT_TABLE, FULLTEXT_INDEX)


# The same for the bodies of the message history (the revision adding the history runs
# the same statements).
HISTORY_FULLTEXT_TABLE = "history_bodies_fts"
HISTORY_FULLTEXT_INDEX = "ix_history_bodies_fts"

SQLITE_HISTORY_FULLTEXT_DDL, POSTGRESQL_HISTORY_FULLTEXT_DDL = fulltext_ddl(
    HistoryBody.__table__, "text", HISTORY_FULLTEXT_TABLE, HISTORY_FULLTEXT_INDEX)


def is_fulltext_object(name: str | None) -> bool:
    """Tell whether a reflected table or index belongs to a full-text search."""
    if not name:
        return False
    return any(name == index or name == table or name.startswith(table + "_")
               for table, index in ((FULLTEXT_TABLE, FULLTEXT_INDEX),
                                    (HISTORY_FULLTEXT_TABLE, HISTORY_FULLTEXT_INDEX)))
