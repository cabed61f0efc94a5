"""Search queries over cached pubsub items: their form and their validation.

A :class:`SearchQuery` says which items to find (filters on their nodes, conditions on
the data the analysers parsed, words of their text), in which order, and which page of
them to return.  It is validated when it is built: every path, operator, order key and
value is checked against what the search knows, and refused with an
:class:`InvalidQuery` whose message says what to write instead.  The SQL is built from
that validated query by :mod:`.search` (``storage.search``), where nothing a caller
writes is ever pasted into SQL.

See ``doc/developer/search.rst`` for the query format as frontends write it.
"""

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from libervia.backend.core.exceptions import BackendError
from libervia.backend.memory.engines import MAX_SQL_INTEGER

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
        _no_nul(value, where)
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
        _no_nul(value, name)
    return tuple(values)


def _non_negative(name: str, value: Any) -> int:
    if (isinstance(value, bool) or not isinstance(value, int)
            or not 0 <= value <= MAX_SQL_INTEGER):
        raise InvalidQuery(f"{name} must be an integer from 0 to {MAX_SQL_INTEGER}, not "
                           f"{value!r}")
    return value


def _no_nul(value: str, where: str) -> str:
    """``value``, if it holds no NUL: no item's text does (XML can't carry it), and
    neither SQLite's full-text query parser nor PostgreSQL's text take it."""
    if "\x00" in value:
        raise InvalidQuery(f"{where}: a string can't hold a NUL character (U+0000)")
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
            _no_nul(self.fts, "fts")
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
