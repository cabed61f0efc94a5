"""``storage.history``: the messages of each profile, sent and received.

A message is stored once, however often it comes: live, and later (the next parts of
the history) as a carbon or from the server's archive.  The database itself refuses the
second copy, by unique constraints: the stanza-id the account's server gave (XEP-0359)
once per profile, an origin-id once per sender.  :meth:`HistoryComponent.add` inserts
with ``ON CONFLICT DO NOTHING`` and, when the row was there already, answers the stored
message (completing its stanza-id when the new copy brings the one it lacked: a message
the account sent is stored before its server archives it).

Bodies and subjects are kept by language (``""``: none said), bodies indexed for
full-text search (FTS5 on SQLite, a text search index on PostgreSQL).  Pages are read
by time, with a message's uid as cursor.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session
from twisted.internet import defer

from libervia.backend.core.exceptions import NotFound
from libervia.backend.memory.engines import DatabaseEngine
from libervia.backend.memory.sqla_mapping import HistoryBody, HistoryEntry, HistorySubject
from libervia.backend.memory.storage.profiles import thd_profile_id
from libervia.backend.memory.storage.runner import StorageComponent

#: what ``direction`` may be: received, or sent (by the account, from any of its devices)
DIRECTIONS = ("in", "out")
#: the orders of a page: newest first, or oldest first
ORDERS = ("desc", "asc")


def _jid(bare: str, resource: str | None) -> str:
    return f"{bare}/{resource}" if resource else bare


@dataclass(frozen=True)
class HistoryMessage:
    """A message of the history, as stored."""

    uid: str
    source: str
    source_resource: str | None
    dest: str
    dest_resource: str | None
    conversation: str
    timestamp: datetime
    received: datetime
    type: str
    direction: str
    bodies: dict[str, str] = field(default_factory=dict)
    subjects: dict[str, str] = field(default_factory=dict)
    thread: str | None = None
    thread_parent: str | None = None
    stanza_id: str | None = None
    origin_id: str | None = None
    message_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def body(self) -> str | None:
        """The body without language, else the first one."""
        return _main(self.bodies)

    def to_dict(self) -> dict[str, Any]:
        """The message as the bridge sends it (JIDs in full, dates in ISO 8601)."""
        return {
            "uid": self.uid, "from": _jid(self.source, self.source_resource),
            "to": _jid(self.dest, self.dest_resource), "with": self.conversation,
            "timestamp": self.timestamp.isoformat(), "received": self.received.isoformat(),
            "type": self.type, "direction": self.direction, "body": self.body,
            "bodies": dict(self.bodies), "subject": _main(self.subjects),
            "subjects": dict(self.subjects), "thread": self.thread,
            "thread_parent": self.thread_parent, "stanza_id": self.stanza_id,
            "origin_id": self.origin_id, "id": self.message_id, "extra": dict(self.extra),
        }


def _main(texts: dict[str, str]) -> str | None:
    if "" in texts:
        return texts[""]
    return next(iter(texts.values()), None)


@dataclass(frozen=True)
class AddResult:
    """What :meth:`HistoryComponent.add` did: ``stored`` is False when the message was
    there already; ``message`` is the stored one (the earlier copy, then)."""

    stored: bool
    message: HistoryMessage


@dataclass(frozen=True)
class HistoryFilter:
    """Which messages a page of history holds (checked by the caller).

    ``before`` and ``after`` are uids: the page holds messages strictly older (newer)
    than that one; ``since`` and ``until`` bound the time (``until`` excluded).
    """

    with_jid: str | None = None
    limit: int = 50
    before: str | None = None
    after: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    words: tuple[str, ...] = ()
    types: tuple[str, ...] | None = None
    order: str = "desc"


@dataclass(frozen=True)
class HistoryPage:
    """A page of history, in the order asked; ``more``: other messages match beyond
    it (in that order)."""

    messages: list[HistoryMessage]
    more: bool

    def to_dict(self) -> dict[str, Any]:
        return {"messages": [m.to_dict() for m in self.messages], "more": self.more}


class HistoryComponent(StorageComponent):
    """The message history; every method returns a Deferred."""

    def add(self, profile: str, message: HistoryMessage) -> defer.Deferred:
        """Store ``message`` unless it is stored already; fire with an
        :class:`AddResult`.

        :raise NotFound: no such profile
        """
        return self.runner.run_in_session("history_add", thd_add, self.db_engine,
                                          profile, message)

    def get(self, profile: str, uid: str) -> defer.Deferred:
        """The stored message ``uid`` of ``profile``.

        :raise NotFound: no such profile, or no such message
        """
        return self.runner.run_in_session("history_message", thd_get, profile, uid,
                                          write=False)

    def get_history(self, profile: str, filter_: HistoryFilter) -> defer.Deferred:
        """A page of ``profile``'s history (a :class:`HistoryPage`).

        :raise NotFound: no such profile, or ``before``/``after`` is no message of it
        """
        return self.runner.run_in_session("history_get", thd_get_history,
                                          self.db_engine, profile, filter_, write=False)


# functions run in the storage's threads


def _texts(session: Session, table: Any, ids: Iterable[int]) -> dict[int, dict[str, str]]:
    found: dict[int, dict[str, str]] = {}
    ids = list(ids)
    if not ids:
        return found
    rows = session.execute(select(table.history_id, table.lang, table.text)
                           .where(table.history_id.in_(ids)).order_by(table.id))
    for history_id, lang, text in rows:
        found.setdefault(history_id, {})[lang] = text
    return found


def _messages(session: Session, entries: list[HistoryEntry]) -> list[HistoryMessage]:
    ids = [e.id for e in entries]
    bodies, subjects = _texts(session, HistoryBody, ids), _texts(session, HistorySubject,
                                                                 ids)
    return [HistoryMessage(
        e.uid, e.source, e.source_resource, e.dest, e.dest_resource, e.conversation,
        e.timestamp, e.received_timestamp, e.type_, e.direction, bodies.get(e.id, {}),
        subjects.get(e.id, {}), e.thread, e.thread_parent, e.stanza_id, e.origin_id,
        e.message_id, dict(e.extra or {})) for e in entries]


def thd_add(session: Session, db_engine: DatabaseEngine, profile: str,
            message: HistoryMessage) -> AddResult:
    profile_id = thd_profile_id(session, profile)
    row = {
        "uid": message.uid, "profile_id": profile_id, "stanza_id": message.stanza_id,
        "origin_id": message.origin_id, "message_id": message.message_id,
        "source": message.source, "source_resource": message.source_resource,
        "dest": message.dest, "dest_resource": message.dest_resource,
        "conversation": message.conversation, "timestamp": message.timestamp,
        "received_timestamp": message.received, "type": message.type,
        "direction": message.direction, "thread": message.thread,
        "thread_parent": message.thread_parent, "extra": message.extra or None,
    }
    table = HistoryEntry.__table__
    new_id = session.execute(db_engine.insert_new(table).returning(table.c.id),
                             row).scalar()
    if new_id is None:
        return AddResult(False, _thd_existing(session, profile_id, message))
    for texts, text_table in ((message.bodies, HistoryBody.__table__),
                              (message.subjects, HistorySubject.__table__)):
        if texts:
            session.execute(text_table.insert(), [
                {"history_id": new_id, "lang": lang, "text": text}
                for lang, text in texts.items()])
    return AddResult(True, message)


def _thd_existing(session: Session, profile_id: int, message: HistoryMessage
                  ) -> HistoryMessage:
    """The stored copy of ``message``, whose insertion was refused."""
    mine = HistoryEntry.profile_id == profile_id
    existing = None
    if message.stanza_id is not None:
        existing = session.scalar(select(HistoryEntry).where(
            mine, HistoryEntry.stanza_id == message.stanza_id))
    if existing is None and message.origin_id is not None:
        existing = session.scalar(select(HistoryEntry).where(
            mine, HistoryEntry.source == message.source,
            HistoryEntry.origin_id == message.origin_id))
        if existing is not None and existing.stanza_id is None and message.stanza_id:
            # the archive's id of a message stored before it was archived
            session.execute(update(HistoryEntry).where(HistoryEntry.id == existing.id)
                            .values(stanza_id=message.stanza_id))
            existing.stanza_id = message.stanza_id
    if existing is None:
        # only the uid is left to conflict: the caller gave one already used
        raise ValueError(f"the uid {message.uid!r} is taken by another message")
    return _messages(session, [existing])[0]


def thd_get(session: Session, profile: str, uid: str) -> HistoryMessage:
    profile_id = thd_profile_id(session, profile)
    entry = session.scalar(select(HistoryEntry).where(
        HistoryEntry.profile_id == profile_id, HistoryEntry.uid == uid))
    if entry is None:
        raise NotFound(f"profile {profile} has no message {uid[:100]!r}")
    return _messages(session, [entry])[0]


def _position(session: Session, profile_id: int, uid: str, what: str
              ) -> tuple[datetime, int]:
    found = session.execute(select(HistoryEntry.timestamp, HistoryEntry.id).where(
        HistoryEntry.profile_id == profile_id, HistoryEntry.uid == uid)).first()
    if found is None:
        raise NotFound(f"{what}: no message {uid[:100]!r} in this profile's history")
    return found[0], found[1]


def thd_get_history(session: Session, db_engine: DatabaseEngine, profile: str,
                    filter_: HistoryFilter) -> HistoryPage:
    profile_id = thd_profile_id(session, profile)
    conditions: list[Any] = [HistoryEntry.profile_id == profile_id]
    if filter_.with_jid is not None:
        conditions.append(HistoryEntry.conversation == filter_.with_jid)
    if filter_.types is not None:
        conditions.append(HistoryEntry.type_.in_(filter_.types))
    if filter_.since is not None:
        conditions.append(HistoryEntry.timestamp >= filter_.since)
    if filter_.until is not None:
        conditions.append(HistoryEntry.timestamp < filter_.until)
    key = (HistoryEntry.timestamp, HistoryEntry.id)
    if filter_.before is not None:
        time, id_ = _position(session, profile_id, filter_.before, "before")
        conditions.append(or_(key[0] < time, and_(key[0] == time, key[1] < id_)))
    if filter_.after is not None:
        time, id_ = _position(session, profile_id, filter_.after, "after")
        conditions.append(or_(key[0] > time, and_(key[0] == time, key[1] > id_)))
    if filter_.words:
        join, condition, __ = db_engine.fulltext_search(list(filter_.words), bodies=True)
        matching = select(HistoryBody.history_id)
        if join is not None:
            matching = matching.join(*join)
        conditions.append(HistoryEntry.id.in_(matching.where(condition)))
    desc = filter_.order == "desc"
    order = [k.desc() if desc else k.asc() for k in key]
    entries = list(session.scalars(select(HistoryEntry).where(*conditions)
                                   .order_by(*order).limit(filter_.limit + 1)))
    more = len(entries) > filter_.limit
    return HistoryPage(_messages(session, entries[:filter_.limit]), more)
