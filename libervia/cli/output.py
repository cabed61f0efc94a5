"""Printing results: one JSON document for scripts, aligned text for people."""

from __future__ import annotations

import json

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import IO, Any


#: words for people of the states the backend names for programs (JSON keeps the names)
STATE_WORDS = {
    # cache sync states (cache_node_state, cache_sync_progress, cache_stats)
    "none": "not synchronised yet",
    "in_progress": "synchronising",
    "no_sync": "not to synchronise",
    "error": "failed",
}


def state(name: Any) -> str:
    """A state name of the backend (``in_progress``) as a person reads it."""
    return STATE_WORDS.get(str(name), str(name).replace("_", " "))


def count(number: Any, singular: str, plural: str | None = None) -> str:
    """``1 item``, ``2 items``, ``0 items`` (``plural`` when not ``singular + "s"``)."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def print_json(data: Any, out: IO[str]) -> None:
    """Print ``data`` as one indented JSON document."""
    out.write(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False))
    out.write("\n")


def text(value: Any) -> str:
    """A value as a person reads it in a table."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(text(v) for v in value)
    return str(value)


def print_table(
    rows: Iterable[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    out: IO[str],
    empty: str = "(none)",
) -> None:
    """Print ``rows`` as aligned columns.

    :param columns: (key in the row, header) pairs; the last column is not padded
    :param empty: printed when there is no row
    """
    cells = [[text(row.get(key)) for key, __ in columns] for row in rows]
    if not cells:
        out.write(empty + "\n")
        return
    headers = [header for __, header in columns]
    widths = [max(len(line[i]) for line in [headers, *cells]) for i in range(len(columns))]
    for line in [headers, *cells]:
        padded = [cell.ljust(width) for cell, width in zip(line[:-1], widths[:-1], strict=True)]
        out.write("  ".join([*padded, line[-1]]).rstrip() + "\n")


def print_fields(fields: Sequence[tuple[str, Any]], out: IO[str]) -> None:
    """Print ``label: value`` lines, values aligned."""
    width = max((len(label) for label, __ in fields), default=0)
    for label, value in fields:
        out.write(f"{label + ':':<{width + 1}} {text(value)}\n")


def duration(seconds: float) -> str:
    """``3725.2`` -> ``1h 2m 5s``."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m")]
    shown = [f"{n}{unit}" for n, unit in parts if n] + [f"{secs}s"]
    return " ".join(shown)
