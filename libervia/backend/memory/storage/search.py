"""``storage.search``: search over cached pubsub items, and its SQL.

:meth:`SearchComponent.search_items` runs a :class:`~.search_query.SearchQuery`
(validated when it is built, see :mod:`.search_query`) and returns a
:class:`SearchResult`.  The SQL is built with SQLAlchemy from the validated query:
paths and values always travel as bound parameters, and operators only select one of
the fixed SQL constructs below, so nothing a caller writes is ever pasted into SQL.

The same query gives the same items, in the same order, on SQLite and PostgreSQL:

* a condition only matches values of its operand's JSON type (``"10"`` is not ``10``),
  because the two engines compare mixed types differently;
* strings are compared code point by code point (binary on SQLite, ``COLLATE "C"`` on
  PostgreSQL), whatever the database's locale, so ISO 8601 dates in UTC compare as
  dates;
* missing values sort last, in either direction.

See ``doc/developer/search.rst`` for the query format as frontends write it.
"""

import json
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    Integer,
    Numeric,
    String,
    Text,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.orm import Session
from twisted.internet import defer

from libervia.backend.memory.engines import DatabaseEngine
from libervia.backend.memory.sqla_mapping import Profile, PubsubItem, PubsubNode
from libervia.backend.memory.storage.runner import StorageComponent
from libervia.backend.memory.storage.search_query import (
    Condition,
    InvalidQuery,
    Path,
    SearchQuery,
)


class SearchComponent(StorageComponent):
    """Search of cached items; see ``doc/developer/search.rst``."""

    def search_items(self, query: SearchQuery | Mapping[str, Any]) -> defer.Deferred:
        """Search cached items by node, parsed data and full text, one page at a time.

        :param query: a :class:`~.search_query.SearchQuery`, or its JSON form (a
            mapping, see ``doc/developer/search.rst``), validated here
        :return: Deferred fired with a :class:`SearchResult`
        :raise InvalidQuery: the query is invalid; the message says why
        """
        try:
            if not isinstance(query, SearchQuery):
                query = SearchQuery.from_dict(query)
        except ValueError:
            return defer.fail()
        return self.runner.run_in_session("search_items", thd_search, self.db_engine,
                                          query, write=False)


# results


@dataclass(frozen=True)
class SearchHit:
    """One item found; ``rank`` only with full text, ``xml`` only with ``payload``."""

    profile: str
    service: str
    node: str
    item_id: str
    created: datetime
    updated: datetime
    parsed: Any
    rank: float | None = None
    xml: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The hit as the bridge sends it (dates in ISO 8601)."""
        data = {"service": self.service, "node": self.node, "id": self.item_id,
                "created": self.created.isoformat(), "updated": self.updated.isoformat(),
                "parsed": self.parsed}
        if self.rank is not None:
            data["rank"] = self.rank
        if self.xml is not None:
            data["xml"] = self.xml
        return data


@dataclass(frozen=True)
class SearchResult:
    """A page of results: ``total`` items match, ``items`` start at ``index``."""

    items: list[SearchHit]
    total: int
    index: int

    @property
    def more(self) -> bool:
        """Whether items follow this page."""
        return self.index + len(self.items) < self.total

    def to_dict(self) -> dict[str, Any]:
        """The page as the bridge sends it: ``items``, ``total``, ``index``, ``more``."""
        return {"items": [hit.to_dict() for hit in self.items], "total": self.total,
                "index": self.index, "more": self.more}


# SQL


class _Parsed:
    """SQL reading the parsed data of items, for one engine."""

    def __init__(self, dialect: str) -> None:
        if dialect not in ("sqlite", "postgresql"):
            raise NotImplementedError(f"no search of parsed data on {dialect}")
        self.pg = dialect == "postgresql"

    def _access(self, path: Path) -> tuple[Any, Any]:
        """(JSON type name, value) expressions of the value at ``path``."""
        column = PubsubItem.parsed
        if self.pg:
            from sqlalchemy.dialects.postgresql import ARRAY, JSONB

            segments = literal([str(s) for s in path], ARRAY(Text))
            node = column.op("#>", return_type=JSONB)(segments)
            return func.jsonb_typeof(node), column.op("#>>", return_type=Text)(segments)
        json_path = literal("$" + "".join(
            f"[{s}]" if isinstance(s, int) else f".{s}" for s in path), String)
        return func.json_type(column, json_path), func.json_extract(column, json_path)

    def typed(self, path: Path, kind: str) -> Any:
        """The value at ``path`` when it is of JSON type ``kind``, else NULL."""
        json_type, value = self._access(path)
        if kind == "number":
            if self.pg:
                return case((json_type == "number", cast(value, Numeric)))
            return case((json_type.in_(["integer", "real"]), value))
        if kind == "string":
            if self.pg:
                return case((json_type == "string", value)).collate("C")
            return case((json_type == "text", value))
        if kind == "boolean":
            # 'true' or 'false'
            if self.pg:
                return case((json_type == "boolean", value))
            return case((json_type.in_(["true", "false"]), json_type))
        raise AssertionError(kind)

    def compared(self, path: Path, kind: str, compare: Callable[[Any], Any]) -> Any:
        """``compare(value)`` for the value at ``path`` when it is of JSON type ``kind``.

        On SQLite, the value is compared first and its type checked only where the
        comparison holds: every json_*() call parses the document again, and most
        items fail the comparison.  A value of another type fails the type check
        whatever the comparison gave, so the result is that of :meth:`typed`.
        """
        if self.pg or kind == "boolean":
            return compare(self.typed(path, kind))
        json_type, value = self._access(path)
        types = ["integer", "real"] if kind == "number" else ["text"]
        return and_(compare(value), json_type.in_(types))

    def literal(self, kind: str, value: Any) -> Any:
        if kind == "boolean":
            return literal("true" if value else "false", String)
        if kind == "string":
            return literal(value, Text)
        bound = literal(value, Integer if isinstance(value, int) else Float)
        return cast(bound, Numeric) if self.pg else bound

    def is_null(self, path: Path) -> Any:
        return self._access(path)[1].is_(None)

    def is_array(self, path: Path) -> Any:
        return self._access(path)[0] == "array"

    def overlap(self, path: Path, kind: str, values: tuple[Any, ...]) -> Any:
        if self.pg:
            from sqlalchemy.dialects.postgresql import ARRAY, JSONB

            node = PubsubItem.parsed.op("#>", return_type=JSONB)(
                literal([str(s) for s in path], ARRAY(Text)))
            # containment compares JSON values with their types: "1" is not 1
            return and_(self.is_array(path), or_(*(
                node.op("@>", return_type=Boolean)(cast(literal(json.dumps([v]), Text),
                                                        JSONB))
                for v in values)))
        json_path = "$" + "".join(f"[{s}]" if isinstance(s, int) else f".{s}"
                                  for s in path)
        elements = func.json_each(PubsubItem.parsed, literal(json_path, String)
                                  ).table_valued("key", "value", "type").alias("elements")
        types = ["integer", "real"] if kind == "number" else ["text"]
        # json_each() gives the elements of an array with their index as key, the
        # members of an object with their name, a lone value with no key: an integer
        # key tells an array's element, with no json_type() call (which would parse the
        # document once more for every item)
        return exists(
            select(literal(1)).select_from(elements).where(
                func.typeof(elements.c.key) == "integer",
                elements.c.type.in_(types),
                elements.c.value.in_([self.literal(kind, v) for v in values])))

    def like(self, path: Path, pattern: str, case_sensitive: bool) -> Any:
        if self.pg:
            value = self.typed(path, "string")
            # backslash is PostgreSQL's default escape character
            return value.like(literal(pattern, Text)) if case_sensitive else (
                value.ilike(literal(pattern, Text)))
        if case_sensitive:
            # SQLite's LIKE ignores ASCII case; GLOB does not
            glob = literal(_like_to_glob(pattern), Text)
            return self.compared(path, "string", lambda value: value.op(
                "GLOB", return_type=Boolean)(glob))
        return self.compared(path, "string", lambda value: value.like(
            literal(pattern, Text), escape="\\"))

    def condition(self, condition: Condition) -> ColumnElement[bool]:
        op, path, kind, value = condition.op, condition.path, condition.kind, \
            condition.value
        negated = {"!=": "==", "not_in": "in", "disjoint": "overlap"}
        if op in negated:
            positive = self.condition(Condition(path, negated[op], value, kind))
            # the exact complement: also items where the value is missing or of
            # another type (SQL's NULL would leave them out of both)
            return not_(func.coalesce(positive, false(), type_=Boolean))
        if op == "==":
            if kind == "null":
                return self.is_null(path)
            bound = self.literal(kind, value)
            return self.compared(path, kind, lambda typed: typed == bound)
        if op in (">", ">=", "<", "<="):
            bound = self.literal(kind, value)
            compare = {">": operator.gt, ">=": operator.ge, "<": operator.lt,
                       "<=": operator.le}[op]
            return self.compared(path, kind, lambda typed: compare(typed, bound))
        if op == "between":
            low, high = (self.literal(kind, v) for v in value)
            return self.compared(path, kind, lambda typed: typed.between(low, high))
        if op == "in":
            bounds = [self.literal(kind, v) for v in value]
            return self.compared(path, kind, lambda typed: typed.in_(bounds))
        if op == "overlap":
            return self.overlap(path, kind, value)
        if op in ("like", "ilike"):
            return self.like(path, value, op == "like")
        raise InvalidQuery(f"unknown operator {op!r}")  # Condition.make prevents it

    def item_name(self) -> Any:
        return PubsubItem.name.collate("C") if self.pg else PubsubItem.name


def _like_to_glob(pattern: str) -> str:
    """A LIKE pattern (``%``, ``_``, ``\\`` escaping) as an SQLite GLOB pattern."""
    glob = []
    escaped = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
            continue
        elif char == "%":
            glob.append("*")
            continue
        elif char == "_":
            glob.append("?")
            continue
        glob.append(f"[{char}]" if char in "*?[" else char)
    return "".join(glob)


def thd_search(session: Session, db_engine: DatabaseEngine, query: SearchQuery
               ) -> SearchResult:
    """Run ``query`` (in a storage thread); see :meth:`SearchComponent.search_items`."""
    parsed = _Parsed(db_engine.name)
    conditions: list[Any] = []
    for name, column in (("profiles", Profile.name), ("services", PubsubNode.service),
                         ("nodes", PubsubNode.name), ("analysers", PubsubNode.analyser),
                         ("types", PubsubNode.type_), ("subtypes", PubsubNode.subtype)):
        values = getattr(query, name)
        if values is not None:
            conditions.append(column.in_(values))
    conditions.extend(parsed.condition(c) for c in query.conditions)
    join = score = None
    if query.words:
        join, text_condition, score = db_engine.fulltext_search(list(query.words))
        conditions.append(text_condition)

    def from_(statement: Any) -> Any:
        statement = statement.select_from(PubsubItem).join(
            PubsubNode, PubsubItem.node_id == PubsubNode.id).join(
            Profile, PubsubNode.profile_id == Profile.id)
        if join is not None:
            statement = statement.join(*join)
        return statement.where(*conditions)

    # The page and the total come from one statement.  The matches are selected once,
    # with only their sort keys, counted by a window over all of them, sorted and cut
    # to the page; only then are the page's items joined for the columns to return,
    # so that sorting carries no document.  The window is outside the selection, as
    # FTS5's bm25() can't be called in a query holding a window.
    keys: dict[str, Any] = {"id": PubsubItem.id}
    if score is not None:
        keys["rank"] = score
    sort: list[tuple[str, bool]] = []
    for order in query.order:
        if order.key == "path":
            assert order.path is not None
            for kind in ("number", "string"):
                sort.append((f"k{len(keys)}", order.desc))
                keys[sort[-1][0]] = parsed.typed(order.path, kind)
        elif order.key == "rank":
            sort.append(("rank", order.desc))
        else:
            sort.append((f"k{len(keys)}", order.desc))
            keys[sort[-1][0]] = {"created": PubsubItem.created,
                                 "updated": PubsubItem.updated,
                                 "item_id": parsed.item_name()}[order.key]
    # the row id last: never NULL, it makes the order total
    sort.append(("id", query.order[-1].desc))

    def sorted_by(table: Any) -> list[Any]:
        return [(table.c[name].desc() if desc else table.c[name].asc()).nulls_last()
                if name != "id" else (table.c.id.desc() if desc else table.c.id.asc())
                for name, desc in sort]

    matches = from_(select(*(key.label(name) for name, key in keys.items()))).subquery()
    page = select(matches, func.count().over().label("total")).order_by(
        *sorted_by(matches)).offset(query.index).limit(query.limit).subquery()
    columns = [Profile.name, PubsubNode.service, PubsubNode.name, PubsubItem.name,
               PubsubItem.created, PubsubItem.updated, PubsubItem.parsed]
    if score is not None:
        columns.append(page.c.rank)
    if query.payload:
        columns.append(PubsubItem.data)
    statement = select(*columns, page.c.total).select_from(page).join(
        PubsubItem, PubsubItem.id == page.c.id).join(
        PubsubNode, PubsubItem.node_id == PubsubNode.id).join(
        Profile, PubsubNode.profile_id == Profile.id).order_by(*sorted_by(page))
    # a Core connection: the rows are plain values, nothing for the ORM to do
    connection = session.connection()
    hits = []
    total = 0
    for row in connection.execute(statement):
        profile, service, node, item_id, created, updated, data = row[:7]
        extra = list(row[7:])
        rank = float(extra.pop(0)) if score is not None else None
        xml = extra.pop(0) if query.payload else None
        total = extra.pop(0)
        hits.append(SearchHit(profile, service, node, item_id, created, updated, data,
                              rank, xml))
    if not hits and query.index:
        # a page past the end has no row to carry the total
        total = connection.scalar(from_(select(func.count())))
        assert total is not None
    return SearchResult(hits, total, query.index)
