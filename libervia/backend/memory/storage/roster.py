"""``storage.roster``: each profile's roster, its version, and the subscription requests
waiting for an answer.

The roster is the server's: the storage keeps the copy the server last gave (a full
roster, then the pushes applied to it) and the version it is at, so that the next
connection asks only for what changed (XEP-0237).  Subscription requests are the
contacts': kept until the profile answers them, across restarts.
"""

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from twisted.internet import defer

from libervia.backend.memory.engines import DatabaseEngine
from libervia.backend.memory.sqla_mapping import (
    RosterItem,
    RosterVersion,
    SubscriptionRequest,
    utcnow,
)
from libervia.backend.memory.storage.profiles import thd_profile_id
from libervia.backend.memory.storage.runner import StorageComponent

#: what ``subscription`` may be
SUBSCRIPTIONS = ("none", "to", "from", "both")


@dataclass(frozen=True)
class RosterEntry:
    """One contact of a roster, as stored."""

    jid: str
    name: str | None = None
    subscription: str = "none"
    ask: bool = False
    groups: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"jid": self.jid, "name": self.name, "subscription": self.subscription,
                "ask": self.ask, "groups": list(self.groups)}


@dataclass(frozen=True)
class StoredRoster:
    """A profile's stored roster: its version (``None``: not versioned) and items."""

    version: str | None
    items: list[RosterEntry]
    #: a roster was stored (an empty one included); False before the first download
    known: bool = True


@dataclass(frozen=True)
class PendingRequest:
    """A subscription request received and not answered yet."""

    jid: str
    status: str | None
    received: Any  # an aware datetime

    def to_dict(self) -> dict[str, Any]:
        return {"jid": self.jid, "status": self.status,
                "received": self.received.isoformat()}


class RosterComponent(StorageComponent):
    """Rosters and subscription requests; every method returns a Deferred."""

    def get_roster(self, profile: str) -> defer.Deferred:
        """The stored roster of ``profile`` (a :class:`StoredRoster`).

        :raise NotFound: no such profile
        """
        return self.runner.run_in_session("roster_get", thd_get_roster, profile,
                                          write=False)

    def replace_roster(self, profile: str, version: str | None,
                       items: list[RosterEntry]) -> defer.Deferred:
        """Store a full roster, in place of the stored one, at ``version``."""
        return self.runner.run_in_session("roster_replace", thd_replace_roster,
                                          self.db_engine, profile, version, list(items))

    def apply_push(self, profile: str, version: str | None, entry: RosterEntry | None,
                   removed: str | None = None) -> defer.Deferred:
        """Apply a roster push: ``entry`` added or changed, or the contact ``removed``;
        the roster is then at ``version`` (``None``: unchanged version).

        Fire with True if something changed.
        """
        return self.runner.run_in_session("roster_push", thd_apply_push, self.db_engine,
                                          profile, version, entry, removed)

    def get_pending(self, profile: str) -> defer.Deferred:
        """The subscription requests waiting for an answer, oldest first."""
        return self.runner.run_in_session("subscription_pending", thd_get_pending,
                                          profile, write=False)

    def add_pending(self, profile: str, jid: str, status: str | None,
                    max_pending: int) -> defer.Deferred:
        """Keep a subscription request (a new one from the same contact replaces it).

        Fire with True if it is kept, False if ``max_pending`` requests from others
        already wait.
        """
        return self.runner.run_in_session("subscription_add", thd_add_pending,
                                          self.db_engine, profile, jid, status,
                                          max_pending)

    def del_pending(self, profile: str, jid: str) -> defer.Deferred:
        """Forget the request of ``jid`` (answered, or withdrawn); fire with True if
        there was one."""
        return self.runner.run_in_session("subscription_del", thd_del_pending, profile,
                                          jid)


# functions run in the storage's threads


def _entry(item: RosterItem) -> RosterEntry:
    return RosterEntry(item.jid, item.name, item.subscription, bool(item.ask),
                       tuple(item.groups or ()))


def thd_get_roster(session: Session, profile: str) -> StoredRoster:
    profile_id = thd_profile_id(session, profile)
    version = session.get(RosterVersion, profile_id)
    items = session.scalars(select(RosterItem).where(RosterItem.profile_id == profile_id)
                            .order_by(RosterItem.jid))
    return StoredRoster(None if version is None else version.version,
                        [_entry(i) for i in items], known=version is not None)


def _thd_set_version(session: Session, db_engine: DatabaseEngine, profile_id: int,
                     version: str | None) -> None:
    stmt = db_engine.upsert(RosterVersion.__table__, ["profile_id"], ["version"])
    session.execute(stmt, {"profile_id": profile_id, "version": version})


def _row(profile_id: int, entry: RosterEntry) -> dict[str, Any]:
    return {"profile_id": profile_id, "jid": entry.jid, "name": entry.name,
            "subscription": entry.subscription, "ask": entry.ask,
            "groups": list(entry.groups)}


def thd_replace_roster(session: Session, db_engine: DatabaseEngine, profile: str,
                       version: str | None, items: list[RosterEntry]) -> None:
    profile_id = thd_profile_id(session, profile)
    session.execute(delete(RosterItem).where(RosterItem.profile_id == profile_id))
    if items:
        session.execute(RosterItem.__table__.insert(), [_row(profile_id, e) for e in items])
    _thd_set_version(session, db_engine, profile_id, version)


def thd_apply_push(session: Session, db_engine: DatabaseEngine, profile: str,
                   version: str | None, entry: RosterEntry | None,
                   removed: str | None) -> bool:
    profile_id = thd_profile_id(session, profile)
    changed = False
    if removed is not None:
        changed = bool(session.execute(delete(RosterItem).where(
            RosterItem.profile_id == profile_id, RosterItem.jid == removed)).rowcount)
    if entry is not None:
        stmt = db_engine.upsert(RosterItem.__table__, ["profile_id", "jid"],
                                ["name", "subscription", "ask", "groups"])
        session.execute(stmt, _row(profile_id, entry))
        changed = True
    if version is not None:
        _thd_set_version(session, db_engine, profile_id, version)
    return changed


def thd_get_pending(session: Session, profile: str) -> list[PendingRequest]:
    profile_id = thd_profile_id(session, profile)
    rows = session.scalars(select(SubscriptionRequest)
                           .where(SubscriptionRequest.profile_id == profile_id)
                           .order_by(SubscriptionRequest.received, SubscriptionRequest.id))
    return [PendingRequest(r.jid, r.status, r.received) for r in rows]


def thd_add_pending(session: Session, db_engine: DatabaseEngine, profile: str, jid: str,
                    status: str | None, max_pending: int) -> bool:
    profile_id = thd_profile_id(session, profile)
    mine = SubscriptionRequest.profile_id == profile_id
    others = session.scalar(select(func.count()).select_from(SubscriptionRequest)
                            .where(mine, SubscriptionRequest.jid != jid))
    if others >= max_pending:
        return False
    stmt = db_engine.upsert(SubscriptionRequest.__table__, ["profile_id", "jid"],
                            ["status", "received"])
    session.execute(stmt, {"profile_id": profile_id, "jid": jid, "status": status,
                           "received": utcnow()})
    return True


def thd_del_pending(session: Session, profile: str, jid: str) -> bool:
    profile_id = thd_profile_id(session, profile)
    return bool(session.execute(delete(SubscriptionRequest).where(
        SubscriptionRequest.profile_id == profile_id,
        SubscriptionRequest.jid == jid)).rowcount)
