"""Search over cached pubsub items: the query, its validation, and its SQL.

A :class:`SearchQuery` says which items to find (filters on their nodes, conditions on
the data the analysers parsed, words of their text), in which order, and which page of
them to return.  It is validated when it is built: every path, operator, order key and
value is checked against what the search knows, and refused with an
:class:`InvalidQuery` whose message says what to write instead.  The SQL is then built
with SQLAlchemy from that validated query: paths and values always travel as bound
parameters, and operators only select one of the fixed SQL constructs below, so nothing
a caller writes is ever pasted into SQL.

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
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Session

from libervia.backend.core.exceptions import BackendError
from libervia.backend.memory.sqla_mapping import Profile, PubsubItem, PubsubNode

#: items returned when the query does not say
DEFAULT_LIMIT = 50
#: most items one query may return: larger result sets are read page by page
MAX_LIMIT = 500
#: most conditions on parsed data in one query
MAX_CONDITIONS = 32
#: most values in a list (``in``, ``overlap``..., and the node filters)
MAX_VALUES = 100
#: most segments in a path
MAX_DEPTH = 16
#: longest string value, LIKE pattern or full-text query (characters)
MAX_STRING = 2048
#: largest list index in a path
MAX_INDEX = 100_000

OPERATORS = ("==", "!=", ">", ">=", "<", "<=", "between", "in", "not_in", "overlap",
             "disjoint", "like", "ilike")
ORDER_KEYS = ("created", "updated", "item_id", "rank", "path")
DIRECTIONS = ("asc", "desc")
FILTERS = ("profiles", "services", "nodes", "analysers", "types", "subtypes")
QUERY_KEYS = (*FILTERS, "fts", "conditions", "order", "index", "limit", "payload")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_PATH_TOKEN = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]{0,63})|\[([0-9]{1,6})\]")

Path = tuple[str | int, ...]


class InvalidQuery(BackendError, ValueError):
    """A search query is malformed; the message says what is wrong and what to write."""


# validation


def parse_path(path: Any) -> Path:
    """Return the segments of a path into parsed data.

    A path is a string of names separated by dots, with ``[N]`` for the N-th element
    (from 0) of a list: ``author.name``, ``links[0].href``; or a list of names and
    indexes: ``["links", 0, "href"]``.  A name is an identifier (ASCII letters, digits
    and ``_``, not starting with a digit, at most 64 characters).

    :raise InvalidQuery: anything else
    """
    if isinstance(path, str):
        segments = _parse_path_string(path)
    elif isinstance(path, (list, tuple)):
        segments = []
        for segment in path:
            if isinstance(segment, str) and _IDENTIFIER.fullmatch(segment):
                segments.append(segment)
            elif (isinstance(segment, int) and not isinstance(segment, bool)
                  and 0 <= segment <= MAX_INDEX):
                segments.append(segment)
            else:
                raise InvalidQuery(
                    f"invalid path segment {segment!r} in {list(path)!r}: a segment is "
                    f"a name (letters, digits and _, not starting with a digit) or a "
                    f"list index from 0 to {MAX_INDEX}")
    else:
        raise InvalidQuery(f"invalid path {path!r}: write it as a string such as "
                           "'author.name' or a list such as ['links', 0, 'href']")
    if not segments:
        raise InvalidQuery("empty path: name the parsed field, e.g. 'author.name'")
    if len(segments) > MAX_DEPTH:
        raise InvalidQuery(f"path {path!r} is deeper than {MAX_DEPTH} segments")
    return tuple(segments)


def _parse_path_string(path: str) -> list[str | int]:
    segments: list[str | int] = []
    position = 0
    while position < len(path):
        match = _PATH_TOKEN.match(path, position)
        # a name must follow a dot, except at the start
        if match is None or (match.group(1) is not None and segments
                             and not match.group(0).startswith(".")) or (
                position == 0 and match.group(0).startswith(".")):
            raise InvalidQuery(
                f"invalid path {path!r} at character {position + 1}: write names "
                "separated by dots and [N] for list elements, e.g. 'links[0].href' "
                "(names: letters, digits and _, not starting with a digit)")
        if match.group(1) is not None:
            segments.append(match.group(1))
        else:
            index = int(match.group(2))
            if index > MAX_INDEX:
                raise InvalidQuery(f"list index {index} in path {path!r} is larger "
                                   f"than {MAX_INDEX}")
            segments.append(index)
        position = match.end()
    return segments


def format_path(path: Path) -> str:
    """The string form of a path (see :func:`parse_path`)."""
    text = ""
    for segment in path:
        if isinstance(segment, int):
            text += f"[{segment}]"
        else:
            text += f".{segment}" if text else segment
    return text


def _kind(value: Any, where: str) -> str:
    """JSON type of a scalar value: ``null``, ``boolean``, ``number`` or ``string``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        if not -2**63 <= value < 2**63:
            raise InvalidQuery(f"{where}: the number {value} is too large (64 bits)")
        return "number"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidQuery(f"{where}: {value} is not a number JSON can hold")
        return "number"
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise InvalidQuery(f"{where}: strings are limited to {MAX_STRING} characters")
        return "string"
    raise InvalidQuery(
        f"{where}: {value!r} is a {type(value).__name__}; give a string, a number, "
        "true, false or null (dates as ISO 8601 strings)")


def _value_list(value: Any, where: str, kinds: tuple[str, ...], size: int | None = None
                ) -> tuple[str, tuple[Any, ...]]:
    """Kind and values of a list operand whose values are all of one kind."""
    if not isinstance(value, (list, tuple)):
        raise InvalidQuery(f"{where}: expected a list of values, got {value!r}")
    if size is not None and len(value) != size:
        raise InvalidQuery(f"{where}: expected exactly {size} values, got {len(value)}")
    if not value:
        raise InvalidQuery(f"{where}: expected at least one value")
    if len(value) > MAX_VALUES:
        raise InvalidQuery(f"{where}: at most {MAX_VALUES} values")
    found = {_kind(v, where) for v in value}
    if len(found) > 1:
        raise InvalidQuery(f"{where}: values must all be of one type (got "
                           f"{', '.join(sorted(found))})")
    kind = found.pop()
    if kind not in kinds:
        raise InvalidQuery(f"{where}: values must be "
                           f"{' or '.join(k + 's' for k in kinds)}, not {kind}s")
    return kind, tuple(value)


@dataclass(frozen=True)
class Condition:
    """A condition on parsed data: the value at ``path`` compared with ``value``.

    Build it with :meth:`make`, which validates and normalises; ``kind`` is the JSON
    type the condition applies to (``number``, ``string``, ``boolean`` or ``null``).
    """

    path: Path
    op: str
    value: Any
    kind: str

    @classmethod
    def make(cls, path: Any, op: Any, value: Any) -> "Condition":
        segments = parse_path(path)
        if not isinstance(op, str) or op not in OPERATORS:
            raise InvalidQuery(f"unknown operator {op!r}; use one of "
                               f"{', '.join(OPERATORS)}")
        where = f"condition {format_path(segments)} {op}"
        if op in ("==", "!="):
            kind = _kind(value, where)
        elif op in (">", ">=", "<", "<="):
            kind = _kind(value, where)
            if kind not in ("number", "string"):
                raise InvalidQuery(f"{where}: compare with a number or a string "
                                   f"(dates as ISO 8601 strings), not {value!r}")
        elif op == "between":
            kind, value = _value_list(value, where, ("number", "string"), size=2)
        elif op in ("in", "not_in", "overlap", "disjoint"):
            kind, value = _value_list(value, where, ("number", "string"))
        else:  # like, ilike
            kind = _kind(value, where)
            if kind != "string":
                raise InvalidQuery(f"{where}: the pattern must be a string, using % "
                                   "for any text and _ for one character")
            if (len(value) - len(value.rstrip("\\"))) % 2:
                raise InvalidQuery(f"{where}: the pattern ends with a lone \\, which "
                                   "escapes nothing; write \\\\ for a backslash")
        return cls(segments, op, value, kind)


@dataclass(frozen=True)
class Order:
    """One sort key: ``key`` is one of :data:`ORDER_KEYS`; ``path`` only for ``path``."""

    key: str
    desc: bool
    path: Path | None = None


def _parse_order(spec: Any) -> Order:
    if isinstance(spec, str):
        spec = {"by": spec}
    elif isinstance(spec, (list, tuple)):
        # ["created"], ["created", "desc"], ["path", "author.name"], ["path", P, "desc"]
        items = list(spec)
        if not items:
            raise InvalidQuery("empty order: name a key, e.g. 'created'")
        by, rest = items[0], items[1:]
        spec = {"by": by}
        if by == "path":
            if not rest:
                raise InvalidQuery("order by path needs the path, e.g. "
                                   "['path', 'published', 'desc']")
            spec["path"], rest = rest[0], rest[1:]
        if rest:
            spec["direction"] = rest[0]
        if len(rest) > 1:
            raise InvalidQuery(f"too many elements in order {list(items)!r}")
    if not isinstance(spec, Mapping):
        raise InvalidQuery(f"invalid order {spec!r}: use e.g. 'created', "
                           "['updated', 'desc'] or {'by': 'path', 'path': 'published'}")
    unknown = set(spec) - {"by", "path", "direction"}
    if unknown:
        raise InvalidQuery(f"unknown order key(s) {', '.join(sorted(map(str, unknown)))}"
                           "; use by, path and direction")
    by = spec.get("by")
    if by not in ORDER_KEYS:
        raise InvalidQuery(f"unknown order {by!r}; use one of {', '.join(ORDER_KEYS)}")
    direction = spec.get("direction", "desc" if by == "rank" else "asc")
    if direction not in DIRECTIONS:
        raise InvalidQuery(f"unknown direction {direction!r}; use asc or desc")
    path = None
    if by == "path":
        if "path" not in spec:
            raise InvalidQuery("order by path needs the path, e.g. 'published'")
        path = parse_path(spec["path"])
    elif "path" in spec:
        raise InvalidQuery(f"order by {by} takes no path")
    return Order(by, direction == "desc", path)


def _parse_condition(spec: Any) -> Condition:
    if isinstance(spec, Condition):
        # built by hand maybe: checked like the others
        return Condition.make(spec.path, spec.op, spec.value)
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"path", "op", "value"}
        if unknown or "path" not in spec or "op" not in spec:
            raise InvalidQuery(f"invalid condition {dict(spec)!r}: give path, op and "
                               "value")
        return Condition.make(spec["path"], spec["op"], spec.get("value"))
    if isinstance(spec, (list, tuple)) and len(spec) == 3:
        return Condition.make(*spec)
    raise InvalidQuery(f"invalid condition {spec!r}: write [path, operator, value] or "
                       "{'path': ..., 'op': ..., 'value': ...}")


def _filter_values(name: str, values: Any) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)) or not values:
        raise InvalidQuery(f"{name}: expected a non-empty list of strings")
    if len(values) > MAX_VALUES:
        raise InvalidQuery(f"{name}: at most {MAX_VALUES} values")
    for value in values:
        if not isinstance(value, str) or not value or len(value) > MAX_STRING:
            raise InvalidQuery(f"{name}: {value!r} is not a valid name (a non-empty "
                               "string)")
    return tuple(values)


def _non_negative(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidQuery(f"{name} must be an integer from 0, not {value!r}")
    return value


@dataclass(frozen=True)
class SearchQuery:
    """A validated search over cached items.

    Every filter is optional; given filters must all hold:

    :param profiles, services, nodes, analysers, types, subtypes: the item's node must
        have one of these values (``services`` are bare JIDs as stored)
    :param fts: words the item's text must all hold (full-text search; enables the
        ``rank`` order)
    :param conditions: conditions on parsed data, each a :class:`Condition`,
        ``[path, op, value]`` or ``{"path", "op", "value"}``
    :param order: sort keys: ``"created"``, ``["updated", "desc"]``,
        ``["path", "published", "desc"]``, ``{"by": ..., "path": ..., "direction":
        ...}`` or :class:`Order`; default: ``rank`` with ``fts``, else ``created``
        descending.  Ties are broken by storage order.
    :param index: position of the first item returned (0 is the first)
    :param limit: items returned, 1 to :data:`MAX_LIMIT`
    :param payload: also return each item's raw XML
    :raise InvalidQuery: anything invalid, with a message saying what
    """

    profiles: Sequence[str] | None = None
    services: Sequence[str] | None = None
    nodes: Sequence[str] | None = None
    analysers: Sequence[str] | None = None
    types: Sequence[str] | None = None
    subtypes: Sequence[str] | None = None
    fts: str | None = None
    conditions: Sequence[Any] = ()
    order: Sequence[Any] = ()
    index: int = 0
    limit: int = DEFAULT_LIMIT
    payload: bool = False
    #: the words of ``fts``
    words: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        for name in FILTERS:
            put(name, _filter_values(name, getattr(self, name)))
        if self.fts is not None:
            if not isinstance(self.fts, str) or len(self.fts) > MAX_STRING:
                raise InvalidQuery(f"fts must be a string of at most {MAX_STRING} "
                                   "characters")
            if not self.fts.split():
                raise InvalidQuery("fts has no word: give at least one word to search")
            put("words", tuple(self.fts.split()))
        conditions = self.conditions
        if isinstance(conditions, (str, Mapping)) or not isinstance(
                conditions, Iterable):
            raise InvalidQuery("conditions must be a list of [path, operator, value]")
        conditions = tuple(_parse_condition(c) for c in conditions)
        if len(conditions) > MAX_CONDITIONS:
            raise InvalidQuery(f"at most {MAX_CONDITIONS} conditions")
        put("conditions", conditions)
        order = self.order
        if isinstance(order, (str, Mapping)):
            order = [order]
        if not isinstance(order, Iterable):
            raise InvalidQuery(f"invalid order {order!r}")
        order = tuple(_parse_order(
            {"by": o.key, "direction": "desc" if o.desc else "asc"}
            | ({} if o.path is None else {"path": o.path}))
            if isinstance(o, Order) else _parse_order(o) for o in order)
        if len(order) > 8:
            raise InvalidQuery("at most 8 sort keys")
        if any(o.key == "rank" for o in order) and not self.words:
            raise InvalidQuery("order by rank needs a full-text search (fts)")
        if not order:
            order = (Order("rank", True),) if self.words else (Order("created", True),)
        put("order", order)
        put("index", _non_negative("index", self.index))
        limit = self.limit
        if isinstance(limit, bool) or not isinstance(limit, int) or not (
                1 <= limit <= MAX_LIMIT):
            raise InvalidQuery(f"limit must be an integer from 1 to {MAX_LIMIT}, not "
                               f"{limit!r}; read larger results page by page (index)")
        if not isinstance(self.payload, bool):
            raise InvalidQuery(f"payload must be true or false, not {self.payload!r}")

    @classmethod
    def from_dict(cls, data: Any) -> "SearchQuery":
        """Build a query from its JSON form (see ``doc/developer/search.rst``)."""
        if not isinstance(data, Mapping):
            raise InvalidQuery("a search query is a JSON object")
        unknown = set(data) - set(QUERY_KEYS)
        if unknown:
            raise InvalidQuery(f"unknown query key(s): {', '.join(sorted(map(str, unknown)))}"
                               f"; use {', '.join(QUERY_KEYS)}")
        return cls(**data)


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


def thd_search(session: Session, db_engine: Any, query: SearchQuery) -> SearchResult:
    """Run ``query`` (in a storage thread); see :meth:`.Storage.search_items`."""
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
