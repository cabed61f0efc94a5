"""``storage.pubsub``: the pubsub cache's nodes, items, sync states and statistics.

Nodes are written and read as mapped :class:`~.sqla_mapping.PubsubNode` objects
(detached, every column loaded); items are written in batches by upserts, and read by
:meth:`PubsubComponent.get_items` (see :mod:`.item_reads`, the one read path of items).
"""

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from twisted.internet import defer

from libervia.backend.core.exceptions import NotFound
from libervia.backend.memory.engines import MAX_SQL_INTEGER, DatabaseEngine
from libervia.backend.memory.sqla_mapping import (
    Profile,
    PubsubItem,
    PubsubNode,
    SyncState,
    utcnow,
)
from libervia.backend.memory.storage.group_commit import GroupCommit
from libervia.backend.memory.storage.item_reads import ItemCounts, OrderBy, thd_get_items
from libervia.backend.memory.storage.memo import MISSING, ReadMemo
from libervia.backend.memory.storage.profiles import thd_profile_id
from libervia.backend.memory.storage.runner import StorageComponent, StorageRunner

#: items written per transaction by :meth:`PubsubComponent.cache_pubsub_items`
DEFAULT_BATCH_SIZE = 200
#: items at most in a transaction grouping several calls of
#: :meth:`PubsubComponent.cache_pubsub_items` (see :mod:`.group_commit`)
GROUP_MAX_ITEMS = 2000

#: tables a write of items changes (the full-text index follows them); the node
#: rows remembered stay true through it
ITEM_TABLES = frozenset({"pubsub_items"})
#: tables whose writes make the node rows remembered stale (a profile deleted takes
#: its nodes with it)
NODE_TABLES = frozenset({"pubsub_nodes", "profiles"})

#: columns of a node that :meth:`PubsubComponent.set_pubsub_node` may set
NODE_FIELDS = frozenset({
    "analyser", "type_", "subtype", "subscribed", "sync_state", "extra",
    "sync_items_done", "sync_items_expected",
})


class PubsubComponent(StorageComponent):
    """Cached pubsub nodes and items; every method returns a Deferred."""

    def __init__(self, runner: StorageRunner) -> None:
        super().__init__(runner)
        self._item_counts = ItemCounts()
        #: node rows by (profile, service, name), None for a node not known: looked up
        #: for every request the cache may answer
        self._nodes = ReadMemo()
        runner.add_write_listener(self._item_counts)
        runner.add_write_listener(self._nodes, NODE_TABLES)
        #: writes of items, grouped: notifications of many nodes share transactions
        self._item_writes = GroupCommit(runner, "cache_pubsub_items",
                                        self._thd_cache_groups, GROUP_MAX_ITEMS)

    def _thd_cache_groups(self, session: Session,
                          members: list[tuple[Any, ...]]) -> list[int]:
        return thd_cache_item_groups(session, self.db_engine, members)

    # nodes

    def get_pubsub_node(self, profile: str, service: str, name: str, *,
                        from_memory: bool = True) -> defer.Deferred:
        """Return the :class:`PubsubNode`, or ``None`` if it is not known.

        Each call gives a node object of its own.  A node read since the last write of
        nodes is given at once, without a database round trip (see :mod:`.memo`).

        :param from_memory: False to read the database whatever is remembered (to
            know whether the database answers again, after it failed)
        """
        key = (profile, service, name)
        row = self._nodes.peek(key) if from_memory else MISSING
        if row is not MISSING:
            return defer.succeed(None if row is None else node_from_row(row))
        return self.runner.run_in_session(
            "get_pubsub_node", thd_get_pubsub_node, profile, service, name, self._nodes,
            write=False
        )

    def set_pubsub_node(
        self, profile: str, service: str, name: str, **fields: Any
    ) -> defer.Deferred:
        """Create the node if needed, set ``fields`` on it, and return it.

        :param fields: columns to set (see :data:`NODE_FIELDS`); others keep their value
        """
        unknown = set(fields) - NODE_FIELDS
        if unknown:
            return defer.fail(TypeError(
                f"unknown pubsub node field(s): {', '.join(sorted(unknown))}"
            ))
        return self.runner.run_in_session(
            "set_pubsub_node", thd_set_pubsub_node, profile, service, name, fields
        )

    def get_pubsub_nodes(
        self,
        profile: str | None = None,
        *,
        service: str | None = None,
        sync_states: Iterable[SyncState | None] | None = None,
    ) -> defer.Deferred:
        """Return the known nodes, optionally filtered, ordered by id.

        :param sync_states: states to keep (``None`` in it keeps unsynchronised nodes)
        """
        return self.runner.run_in_session(
            "get_pubsub_nodes", thd_get_pubsub_nodes, profile, service,
            None if sync_states is None else list(sync_states), write=False,
        )

    def delete_pubsub_nodes(
        self,
        profiles: Iterable[str] | None = None,
        services: Iterable[str] | None = None,
        names: Iterable[str] | None = None,
    ) -> defer.Deferred:
        """Delete the nodes matching every filter given, with their items.

        :return: Deferred fired with the number of nodes deleted
        """
        return self.runner.run_in_session(
            "delete_pubsub_nodes", thd_delete_pubsub_nodes,
            _opt_list(profiles), _opt_list(services), _opt_list(names),
        )

    def update_pubsub_node_sync_state(
        self,
        node_id: int,
        state: SyncState | None,
        *,
        items_done: int | None = None,
        items_expected: int | None = None,
    ) -> defer.Deferred:
        """Set the sync state of a node (and its progress), time stamped now.

        :raise NotFound: no node with this id
        """
        return self.runner.run_in_session(
            "update_sync_state", thd_update_sync_state, node_id, state, items_done,
            items_expected,
        )

    # items

    def cache_pubsub_items(
        self,
        node_id: int,
        items: Iterable[Mapping[str, Any]],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        count_progress: bool = False,
    ) -> defer.Deferred:
        """Insert or update items of a node, in transactions of ``batch_size`` items.

        Each item is a mapping with ``name`` (item id) and ``data`` (raw XML, as a
        string), and optionally ``parsed`` (JSON-serialisable), ``created`` and
        ``updated`` (datetimes; default: now).  An existing item keeps its creation
        time; the rest is replaced.  When an id appears several times, the last wins.

        Calls made while another one is being written share the next transaction
        (group commit, see :mod:`.group_commit`): each batch is still committed whole
        or not at all, in the order of the calls, and one failing (its node deleted
        meanwhile...) fails alone.

        :param count_progress: add the items written to the node's
            ``sync_items_done``, in the same transaction (synchronisations use it)
        :return: Deferred fired with the number of items written
        """
        try:
            rows = _item_rows(node_id, items)
        except (KeyError, TypeError) as e:
            return defer.fail(ValueError(f"invalid item to cache: {e}"))
        return defer.ensureDeferred(self._cache_batches(node_id, rows, batch_size,
                                                        count_progress))

    async def _cache_batches(
        self, node_id: int, rows: list[dict[str, Any]], batch_size: int,
        count_progress: bool,
    ) -> int:
        written = 0
        for start in range(0, len(rows), max(1, batch_size)):
            batch = rows[start:start + batch_size]
            written += await self._item_writes.submit(
                node_id, batch, count_progress, size=len(batch),
                # counting the progress changes the node's row
                tables=None if count_progress else ITEM_TABLES)
        return written

    def replace_pubsub_items(
        self,
        node_id: int,
        items: Iterable[Mapping[str, Any]],
        *,
        sync_state: SyncState | None = None,
        seen: datetime | None = None,
        order: OrderBy | str = OrderBy.CREATION,
    ) -> defer.Deferred:
        """Replace every item of a node, in one transaction, keeping their history.

        Readers see either the old items or the new ones, never a mix: this is how a
        synchronisation publishes its result.  Items are given as for
        :meth:`cache_pubsub_items`, in the service's order, and their times are those
        they had:

        * an item already stored keeps its creation time, and its modification time
          if its data is unchanged (else: its given ``updated``, or ``seen``);
        * a new item has its given ``created`` and ``updated`` (the dates the service
          gives, if any), else ``seen`` for its creation and its creation time for its
          modification;
        * along the given order, the times of ``order`` (the order the service keeps
          its items in) never go back: a time that would put an item before the one
          given before it is raised to that one's.  Items of equal times keep the
          given order: ties are broken by storage order, in which they are written.

        :param sync_state: if given, set on the node in the same transaction, with its
            progress (items done and expected) set to the number of items
        :param seen: when the items were fetched (default: now)
        :return: Deferred fired with the number of items written
        """
        try:
            rows = _item_rows(node_id, items, dated=False)
            key = _key_column(order)
        except (KeyError, TypeError, ValueError) as e:
            return defer.fail(ValueError(f"invalid item to cache: {e}"))
        return self.runner.run_in_session(
            "replace_pubsub_items", thd_replace_items, self.db_engine, node_id, rows,
            sync_state, seen or utcnow(), key,
        )

    def get_cache_stats(self, profile: str | None = None) -> defer.Deferred:
        """Return what the pubsub cache holds (for one profile, or in all).

        :return: Deferred fired with ``{"nodes": {state: count}, "items": count,
            "bytes": size of the raw XML}``; the state of unsynchronised nodes is
            ``"none"``, the others are :class:`SyncState` names
        """
        return self.runner.run_in_session("get_cache_stats", thd_cache_stats,
                                          self.db_engine, profile, write=False)

    def delete_pubsub_items(
        self, node_id: int, item_ids: Iterable[str] | None = None
    ) -> defer.Deferred:
        """Delete the given items of a node (all of them if ``item_ids`` is None).

        :return: Deferred fired with the number of items deleted
        """
        return self.runner.run_in_session(
            "delete_pubsub_items", thd_delete_items, node_id, _opt_list(item_ids),
            tables=ITEM_TABLES,
        )

    def purge_pubsub_items(
        self,
        *,
        profiles: Iterable[str] | None = None,
        services: Iterable[str] | None = None,
        names: Iterable[str] | None = None,
        types: Iterable[str] | None = None,
        subtypes: Iterable[str] | None = None,
        created_before: datetime | None = None,
        updated_before: datetime | None = None,
    ) -> defer.Deferred:
        """Delete cached items matching every filter given (all items if none is).

        :return: Deferred fired with the number of items deleted
        """
        return self.runner.run_in_session(
            "purge_pubsub_items", thd_purge_items, _opt_list(profiles),
            _opt_list(services), _opt_list(names), _opt_list(types), _opt_list(subtypes),
            created_before, updated_before,
        )

    def get_items(
        self,
        node_id: int,
        *,
        max_items: int | None = None,
        item_ids: Iterable[str] | None = None,
        before: str | None = None,
        after: str | None = None,
        index: int | None = None,
        order_by: OrderBy | str = OrderBy.CREATION,
        desc: bool = False,
        details: bool = False,
    ) -> defer.Deferred:
        """Return a page of a node's items, RSM style.

        The items (only ``item_ids`` if given) are ordered by creation or modification
        time, oldest first (newest first if ``desc``), ties broken by storage order.
        In that order, at most ``max_items`` items are taken:

        * ``after``: just after the item with this id;
        * ``before``: just before the item with this id, or the last page if ``""``;
        * ``index``: from this position (0 is the first item);
        * none of them: from the start.

        :param details: also read each item's creation and modification times and
            parsed data (an answer to a request needs none of them: each column read
            costs, for every request)
        :return: Deferred fired with ``(items, page)``: a list of
            :class:`~.item_reads.ItemData` (whatever ``details``) in that order, and an
            :class:`~.item_reads.ItemsPage`
        :raise NotFound: the ``before`` or ``after`` item is not in the set
        :raise ValueError: more than one of ``before``, ``after``, ``index``, or a
            negative ``max_items`` or ``index``
        """
        given = [p for p in (before, after, index) if p is not None]
        if len(given) > 1:
            return defer.fail(ValueError("use only one of before, after and index"))
        if (max_items is not None and max_items < 0) or (index is not None and index < 0):
            return defer.fail(ValueError("max_items and index can't be negative"))
        # beyond what the database takes, and beyond any node's size: all the items,
        # or none past the end
        if max_items is not None:
            max_items = min(max_items, MAX_SQL_INTEGER)
        if index is not None:
            index = min(index, MAX_SQL_INTEGER)
        try:
            order = OrderBy(order_by)
        except ValueError:
            return defer.fail(ValueError(
                f"unknown order {order_by!r}, use one of {', '.join(OrderBy)}"
            ))
        return self.runner.run_in_cursor(
            "get_items", thd_get_items, self._item_counts, node_id, max_items,
            _opt_list(item_ids), before, after, index, order, desc, details)


def _opt_list(values: Iterable[str] | None) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        return [values]
    return list(values)


def _item_rows(node_id: int, items: Iterable[Mapping[str, Any]], dated: bool = True
               ) -> list[dict[str, Any]]:
    """Rows of ``items``; ``dated``: with their times (default: now), sorted by name
    (a stable lock order: concurrent batches on PostgreSQL can't deadlock each other),
    else in the given order, times as given (``None`` if not)."""
    now = utcnow()
    by_name: dict[str, dict[str, Any]] = {}
    for item in items:
        name = item["name"]
        data = item["data"]
        if not isinstance(name, str) or not name:
            raise TypeError("item name must be a non-empty string")
        if not isinstance(data, str):
            raise TypeError(f"data of item {name!r} must be a string of XML")
        created, updated = (_aware(item.get(key), name) for key in ("created", "updated"))
        if dated:
            created = created or now
            updated = updated or created
        by_name[name] = {
            "node_id": node_id,
            "name": name,
            "data": data,
            "parsed": item.get("parsed"),
            "created": created,
            "updated": updated,
        }
    return [by_name[name] for name in sorted(by_name)] if dated else list(by_name.values())


def _aware(value: Any, name: str) -> datetime | None:
    """A time given for an item, time zone aware (naive: UTC, as the columns take it)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"times of item {name!r} must be datetimes")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _key_column(order: OrderBy | str) -> str:
    """The column of the items' times that keeps ``order``."""
    return "created" if OrderBy(order) is OrderBy.CREATION else "updated"


# functions run in the storage's threads


def _node_query(session: Session, profile: str, service: str, name: str) -> Any:
    return select(PubsubNode).where(
        PubsubNode.profile_id == thd_profile_id(session, profile),
        PubsubNode.service == service,
        PubsubNode.name == name,
    )


def thd_get_pubsub_node(
    session: Session, profile: str, service: str, name: str, memo: ReadMemo | None = None
) -> PubsubNode | None:
    epoch = memo.epoch() if memo is not None else 0
    node = session.scalar(_node_query(session, profile, service, name))
    if memo is not None:
        memo.remember(epoch, (profile, service, name),
                      None if node is None else node_row(node))
    return node


#: the columns of a node, as :func:`node_row` keeps them
_NODE_COLUMNS = tuple(attr.key for attr in PubsubNode.__mapper__.column_attrs)


def node_row(node: PubsubNode) -> tuple[Any, ...]:
    """A node's column values, to make copies of it (:func:`node_from_row`): ``extra``
    as JSON text, so that no copy shares a mutable value with another."""
    return tuple(json.dumps(node.extra) if key == "extra" else getattr(node, key)
                 for key in _NODE_COLUMNS)


def node_from_row(row: tuple[Any, ...]) -> PubsubNode:
    """A detached :class:`PubsubNode`, every column loaded, as a session gives it."""
    manager = PubsubNode._sa_class_manager
    node = manager.new_instance()
    values = dict(zip(_NODE_COLUMNS, row, strict=True))
    values["extra"] = json.loads(values["extra"])
    node.__dict__.update(values)
    sa_inspect(node).key = manager.mapper.identity_key_from_primary_key((values["id"],))
    return node


def thd_set_pubsub_node(
    session: Session, profile: str, service: str, name: str, fields: dict[str, Any]
) -> PubsubNode:
    # NO KEY UPDATE: items being inserted meanwhile hold KEY SHARE on the node (their
    # foreign key), which a plain FOR UPDATE would wait for, inviting deadlocks
    node = session.scalar(
        _node_query(session, profile, service, name).with_for_update(key_share=True)
    )
    if node is None:
        node = PubsubNode(
            profile_id=thd_profile_id(session, profile), service=service, name=name,
            sync_items_done=0, subscribed=False,
        )
        try:
            with session.begin_nested():
                session.add(node)
        except IntegrityError:
            # created meanwhile by another call: update that one
            node = session.scalars(_node_query(session, profile, service, name)).one()
    for field, value in fields.items():
        setattr(node, field, value)
    if "sync_state" in fields:
        node.sync_state_updated = utcnow()
    session.flush()
    return node


def thd_get_pubsub_nodes(
    session: Session,
    profile: str | None,
    service: str | None,
    sync_states: list[SyncState | None] | None,
) -> list[PubsubNode]:
    query = select(PubsubNode).order_by(PubsubNode.id)
    if profile is not None:
        query = query.where(PubsubNode.profile_id == thd_profile_id(session, profile))
    if service is not None:
        query = query.where(PubsubNode.service == service)
    if sync_states is not None:
        states = [s for s in sync_states if s is not None]
        condition = PubsubNode.sync_state.in_(states)
        if None in sync_states:
            condition = or_(condition, PubsubNode.sync_state.is_(None))
        query = query.where(condition)
    return list(session.scalars(query))


def _node_filters(
    profiles: list[str] | None,
    services: list[str] | None,
    names: list[str] | None,
    types: list[str] | None = None,
    subtypes: list[str] | None = None,
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if profiles is not None:
        conditions.append(PubsubNode.profile_id.in_(
            select(Profile.id).where(Profile.name.in_(profiles))
        ))
    if services is not None:
        conditions.append(PubsubNode.service.in_(services))
    if names is not None:
        conditions.append(PubsubNode.name.in_(names))
    if types is not None:
        conditions.append(PubsubNode.type_.in_(types))
    if subtypes is not None:
        conditions.append(PubsubNode.subtype.in_(subtypes))
    return conditions


def thd_delete_pubsub_nodes(
    session: Session,
    profiles: list[str] | None,
    services: list[str] | None,
    names: list[str] | None,
) -> int:
    stmt = delete(PubsubNode).where(*_node_filters(profiles, services, names))
    return session.execute(stmt).rowcount


def thd_update_sync_state(
    session: Session,
    node_id: int,
    state: SyncState | None,
    items_done: int | None,
    items_expected: int | None,
) -> None:
    values: dict[str, Any] = {"sync_state": state, "sync_state_updated": utcnow()}
    if items_done is not None:
        values["sync_items_done"] = items_done
    if items_expected is not None:
        values["sync_items_expected"] = items_expected
    result = session.execute(
        update(PubsubNode).where(PubsubNode.id == node_id).values(**values)
    )
    if not result.rowcount:
        raise NotFound(f"there is no pubsub node with id {node_id}")


def thd_cache_items(
    session: Session,
    db_engine: DatabaseEngine,
    node_id: int,
    rows: list[dict[str, Any]],
    count_progress: bool,
) -> int:
    return thd_cache_item_groups(session, db_engine, [(node_id, rows, count_progress)])[0]


def thd_cache_item_groups(
    session: Session,
    db_engine: DatabaseEngine,
    members: list[tuple[int, list[dict[str, Any]], bool]],
) -> list[int]:
    """Several calls of :func:`thd_cache_items` (``(node_id, rows, count_progress)``
    each) in one transaction, in order: their rows in one statement."""
    rows = [row for __, member_rows, __ in members for row in member_rows]
    if rows:
        stmt = db_engine.upsert(
            PubsubItem.__table__, ["node_id", "name"], ["data", "parsed", "updated"]
        )
        session.execute(stmt, rows)
    for node_id, member_rows, count_progress in members:
        if count_progress and member_rows:
            thd_count_progress(session, node_id, len(member_rows))
    return [len(member_rows) for __, member_rows, __ in members]


def thd_count_progress(session: Session, node_id: int, count: int) -> None:
    """Add ``count`` to the items a node's synchronisation has written."""
    result = session.execute(
        update(PubsubNode)
        .where(PubsubNode.id == node_id)
        .values(sync_items_done=PubsubNode.sync_items_done + count)
    )
    if not result.rowcount:
        raise NotFound(f"there is no pubsub node with id {node_id}")


def thd_replace_items(
    session: Session,
    db_engine: DatabaseEngine,
    node_id: int,
    rows: list[dict[str, Any]],
    sync_state: SyncState | None,
    seen: datetime,
    key: str,
) -> int:
    stored = {name: (created, updated, data) for name, created, updated, data in
              session.execute(select(PubsubItem.name, PubsubItem.created,
                                     PubsubItem.updated, PubsubItem.data)
                              .where(PubsubItem.node_id == node_id))}
    previous: datetime | None = None
    for row in rows:
        old = stored.get(row["name"])
        if old is None:
            row["created"] = row["created"] or seen
            row["updated"] = row["updated"] or row["created"]
        else:
            row["created"] = old[0]
            row["updated"] = old[1] if old[2] == row["data"] else row["updated"] or seen
        if previous is not None and row[key] < previous:
            row[key] = previous
        row["updated"] = max(row["updated"], row["created"])
        previous = row[key]
    session.execute(delete(PubsubItem).where(PubsubItem.node_id == node_id))
    for start in range(0, len(rows), DEFAULT_BATCH_SIZE):
        thd_cache_items(session, db_engine, node_id, rows[start:start + DEFAULT_BATCH_SIZE],
                        False)
    if sync_state is not None:
        thd_update_sync_state(session, node_id, sync_state, len(rows), len(rows))
    return len(rows)


def thd_cache_stats(
    session: Session, db_engine: DatabaseEngine, profile: str | None
) -> dict[str, Any]:
    node_filter = []
    if profile is not None:
        node_filter.append(PubsubNode.profile_id == thd_profile_id(session, profile))
    nodes = {
        "none" if state is None else state.name: count
        for state, count in session.execute(
            select(PubsubNode.sync_state, func.count())
            .where(*node_filter).group_by(PubsubNode.sync_state)
        )
    }
    items, size = session.execute(
        select(
            func.count(PubsubItem.id),
            func.coalesce(func.sum(db_engine.byte_length(PubsubItem.data)), 0),
        )
        .join(PubsubNode, PubsubItem.node_id == PubsubNode.id)
        .where(*node_filter)
    ).one()
    return {"nodes": nodes, "items": items, "bytes": int(size)}


def thd_delete_items(session: Session, node_id: int, item_ids: list[str] | None) -> int:
    stmt = delete(PubsubItem).where(PubsubItem.node_id == node_id)
    if item_ids is not None:
        stmt = stmt.where(PubsubItem.name.in_(item_ids))
    return session.execute(stmt).rowcount


def thd_purge_items(
    session: Session,
    profiles: list[str] | None,
    services: list[str] | None,
    names: list[str] | None,
    types: list[str] | None,
    subtypes: list[str] | None,
    created_before: datetime | None,
    updated_before: datetime | None,
) -> int:
    stmt = delete(PubsubItem)
    node_conditions = _node_filters(profiles, services, names, types, subtypes)
    if node_conditions:
        stmt = stmt.where(PubsubItem.node_id.in_(
            select(PubsubNode.id).where(*node_conditions)
        ))
    if created_before is not None:
        stmt = stmt.where(PubsubItem.created < created_before)
    if updated_before is not None:
        stmt = stmt.where(PubsubItem.updated < updated_before)
    return session.execute(stmt).rowcount
