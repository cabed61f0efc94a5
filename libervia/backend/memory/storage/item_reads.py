"""Reading pages of a cached node's items: the one read path of ``storage.pubsub``.

Every read of items (the latest N for a request, a page after or before an RSM cursor,
items by id, a whole node) is made here by :func:`thd_get_items`, for every request a
frontend sends: its statements are compiled once per shape and run on a driver cursor
(:meth:`~.runner.StorageRunner.run_in_cursor`), without SQLAlchemy's per-statement and
per-row work.  An answer only needs each item's id and XML: the other columns are read
only when asked (``details``), and decoded only when used (:class:`ItemData`).  The
number of items of a node, needed for every RSM answer, is remembered between reads as
long as nothing is written (:class:`ItemCounts`).
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Integer, and_, bindparam, func, or_, select

from libervia.backend.core.exceptions import NotFound
from libervia.backend.memory.engines import DatabaseEngine
from libervia.backend.memory.sqla_mapping import PubsubItem
from libervia.backend.memory.storage.memo import MISSING, ReadMemo
from libervia.backend.memory.storage.runner import compiled, execute


class OrderBy(StrEnum):
    """Orders in which :meth:`~.pubsub.PubsubComponent.get_items` can return items."""

    CREATION = "creation"
    MODIFICATION = "modification"


@dataclass(frozen=True)
class ItemsPage:
    """Where a page of items returned by ``get_items`` lies.

    The same information as an RSM (XEP-0059) answer: ``first`` and ``last`` are the
    ids of the first and last items of the page (``None`` when it is empty), ``index``
    the position of the first one in the whole ordered set (``None`` when empty), and
    ``count`` the size of that whole set.
    """

    first: str | None
    last: str | None
    index: int | None
    count: int


#: columns of a row of :class:`ItemData`, in this order; the last three with details
_ITEM_COLUMNS = (PubsubItem.name, PubsubItem.data, PubsubItem.created,
                 PubsubItem.updated, PubsubItem.parsed)


class ItemData:
    """An item of a cached node, as ``get_items`` gives it.

    ``name`` (the item id), ``data`` (its XML, as received) and ``node_id`` are plain
    attributes: all that answering a request needs.  ``created``, ``updated`` (aware
    datetimes, UTC) and ``parsed`` (what the node's analyser parsed, ``None`` if
    nothing) are there when the items were read with ``details=True``, decoded from
    the database's values when first used; reading one of them otherwise raises, as a
    relationship of the mapping does, rather than giving a wrong ``None``.
    """

    __slots__ = ("name", "data", "node_id", "_row", "_decoders")

    def __init__(self, node_id: int, row: tuple[Any, ...],
                 decoders: "_Decoders | None") -> None:
        self.node_id = node_id
        self.name: str = row[0]
        self.data: str = row[1]
        self._row = row
        self._decoders = decoders

    def _detail(self, index: int, name: str) -> Any:
        decoders = self._decoders
        if decoders is None:
            raise AttributeError(
                f"{name} of item {self.name!r} was not read: ask get_items for it with "
                "details=True")
        decode = decoders.parsed if index == 4 else decoders.time
        return decode(self._row[index])

    @property
    def created(self) -> datetime:
        return self._detail(2, "created")

    @property
    def updated(self) -> datetime:
        return self._detail(3, "updated")

    @property
    def parsed(self) -> Any:
        return self._detail(4, "parsed")

    def __repr__(self) -> str:
        return f"<ItemData {self.name!r} of node {self.node_id}>"


class _Decoders:
    """How one dialect's driver values of the item columns become Python values."""

    def __init__(self, dialect: Any) -> None:
        def processor(column: Any) -> Callable[[Any], Any]:
            process = column.type.dialect_impl(dialect).result_processor(dialect, None)
            return process or _same

        self.time = processor(PubsubItem.created)
        self.parsed = processor(PubsubItem.parsed)


def _same(value: Any) -> Any:
    return value


_DECODERS: dict[tuple[str, str], _Decoders] = {}


def _decoders(dialect: Any) -> _Decoders:
    key = (dialect.name, dialect.driver)
    found = _DECODERS.get(key)
    if found is None:
        found = _DECODERS[key] = _Decoders(dialect)
    return found


class ItemCounts(ReadMemo):
    """Item counts of nodes, remembered between reads as long as nothing is written.

    Answering "the last N items" RSM style needs the number of items of the node, and
    counting them costs as much as the node is large, for every request.  The counts
    found are kept here (see :mod:`.memo`): a count is used (or kept) by a read only
    if no write was queued, running or finished around that read's queries, so it
    always matches the data the read saw.
    """

    def get(self, key: Any) -> tuple[int, int | None]:
        """``(epoch, count)``: call before the read's first query; count may be None."""
        epoch, count = super().get(key)
        return epoch, None if count is MISSING else count


# statements, by shape; parameters: node_id, id0..idN (the ids asked), anchor (an
# item id), akey and aid (the anchor's sort key and row id), limit, offset


def _id_slots(count: int) -> int:
    """How many id parameters a statement for ``count`` ids has: a power of two.

    The ids are padded (repeating one is harmless in ``IN``), so that the statements
    compiled stay few whatever the requests ask.
    """
    slots = 1
    while slots < count:
        slots *= 2
    return slots


def _conditions(id_slots: int) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [PubsubItem.node_id == bindparam("node_id")]
    if id_slots:
        conditions.append(PubsubItem.name.in_(
            [bindparam(f"id{i}") for i in range(id_slots)]))
    return conditions


def _key(order: OrderBy) -> Any:
    return PubsubItem.created if order is OrderBy.CREATION else PubsubItem.updated


def _precedes(order: OrderBy, desc: bool, strict: bool = True) -> ColumnElement[bool]:
    """Condition: the item comes before the anchor in the set's order."""
    key = _key(order)
    anchor_key, anchor_id = bindparam("akey"), bindparam("aid", type_=Integer)
    first, cmp = (key > anchor_key, PubsubItem.id > anchor_id) if desc else (
        key < anchor_key, PubsubItem.id < anchor_id)
    if not strict:
        cmp = or_(cmp, PubsubItem.id == anchor_id)
    return or_(first, and_(key == anchor_key, cmp))


def _anchor_statement(order: OrderBy, id_slots: int) -> Any:
    return select(_key(order), PubsubItem.id).where(
        *_conditions(id_slots), PubsubItem.name == bindparam("anchor"))


def _page_statement(order: OrderBy, desc: bool, id_slots: int, anchor: str | None,
                    limit: bool, offset: bool, details: bool) -> Any:
    """The page, in ``desc`` order; ``anchor``: "after" or "before" the anchor item."""
    conditions = _conditions(id_slots)
    if anchor == "after":
        # not before the anchor (in the set's order, which is reversed for "before")
        conditions.append(~_precedes(order, desc, strict=False))
    elif anchor == "before":
        conditions.append(_precedes(order, not desc))
    key = _key(order)
    query = select(*_ITEM_COLUMNS[:5 if details else 2]).where(*conditions).order_by(
        *(col.desc() if desc else col.asc() for col in (key, PubsubItem.id)))
    if limit:
        query = query.limit(bindparam("limit", type_=Integer))
    if offset:
        query = query.offset(bindparam("offset", type_=Integer))
    return query


def _count_statement(order: OrderBy, desc: bool, id_slots: int, preceding: str | None
                     ) -> Any:
    """Items of the set; ``preceding``: only those before the anchor ("strict"), or
    up to it ("to")."""
    conditions = _conditions(id_slots)
    if preceding is not None:
        conditions.append(_precedes(order, desc, strict=preceding == "strict"))
    return select(func.count()).select_from(PubsubItem).where(*conditions)


def thd_get_items(
    cursor: Any,
    db_engine: DatabaseEngine,
    dialect: Any,
    counts: ItemCounts,
    node_id: int,
    max_items: int | None,
    item_ids: list[str] | None,
    before: str | None,
    after: str | None,
    index: int | None,
    order: OrderBy,
    desc: bool,
    details: bool,
) -> tuple[list[ItemData], ItemsPage]:
    """See :meth:`~.pubsub.PubsubComponent.get_items`; runs on a driver cursor."""
    whole_node = item_ids is None
    id_slots = 0 if whole_node else _id_slots(len(item_ids or ()))
    params: dict[str, Any] = {"node_id": node_id, "limit": max_items}
    if not whole_node:
        ids = list(item_ids or ())
        padding = ids[-1:] or [""]
        params.update((f"id{i}", ids[i] if i < len(ids) else padding[0])
                      for i in range(id_slots))
    anchored = after is not None or bool(before)
    # taken before the first query: see ItemCounts
    epoch, count = counts.get(node_id) if whole_node else (0, None)
    # several queries must see the same data: one transaction for them all
    snapshot = anchored or count is None
    if snapshot:
        db_engine.begin_read(cursor)

    # (no annotations on these: they would be evaluated at each call)
    def run(key, build):  # noqa: ANN001, ANN202
        return execute(cursor, compiled(dialect, ("items", order, id_slots) + key, build),
                       params)

    def read():  # noqa: ANN202
        """The page's rows (in the set's order), its index, items before it."""
        reverse = before is not None
        limit = max_items is not None
        start = None if reverse else 0
        preceding = None
        direction = desc != reverse
        if anchored:
            params["anchor"] = after if after is not None else before
            found = run(("anchor",), lambda: _anchor_statement(order, id_slots)
                        ).fetchone()
            if found is None:
                raise NotFound(f"item {after if after is not None else before!r} is "
                               "not in the requested set")
            params["akey"], params["aid"] = found[0], found[1]
            side = "after" if after is not None else "before"
            rows = run(("page", direction, side, limit, False, details),
                       lambda: _page_statement(order, direction, id_slots, side, limit,
                                               False, details)).fetchall()
            if after is not None:
                start = run(("count", desc, "to"), lambda: _count_statement(
                    order, desc, id_slots, "to")).fetchone()[0]
            else:
                preceding = run(("count", desc, "strict"), lambda: _count_statement(
                    order, desc, id_slots, "strict")).fetchone()[0]
        else:
            offset = bool(index) and not reverse
            if offset:
                params["offset"] = start = index
            rows = run(("page", direction, None, limit, offset, details),
                       lambda: _page_statement(order, direction, id_slots, None, limit,
                                               offset, details)).fetchall()
        if reverse:
            rows.reverse()
        return rows, start, preceding

    rows, start, preceding = read()
    if count is not None and not counts.unchanged(epoch):
        if not snapshot:
            # written meanwhile: the count may not be the page's; both again, together
            cursor.connection.rollback()
            db_engine.begin_read(cursor)
            rows, start, preceding = read()
        count = None
    if count is None:
        count = run(("count", desc, None), lambda: _count_statement(
            order, desc, id_slots, None)).fetchone()[0]
        if whole_node:
            counts.remember(epoch, node_id, count)
    if start is None:
        start = (count if preceding is None else preceding) - len(rows)
    decoders = _decoders(dialect) if details else None
    items = [ItemData(node_id, row, decoders) for row in rows]
    if not items:
        return items, ItemsPage(None, None, None, count)
    return items, ItemsPage(items[0].name, items[-1].name, start, count)
