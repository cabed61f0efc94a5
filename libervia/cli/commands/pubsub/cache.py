"""``li pubsub cache``: the backend's local cache of nodes (get, sync, state, purge,
reset, search, stats)."""

from __future__ import annotations

from libervia.cli import output
from libervia.cli.base import (
    CommandError,
    Context,
    UsageError,
    add_command,
    add_group,
    add_profile_option,
    resolve_profile,
)
from libervia.cli.commands.pubsub.common import (
    FRESHNESS_NOTES,
    get_arguments,
    get_params,
    node_arguments,
    node_params,
    parse_count,
    render_items,
)

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    import argparse
    from typing import Any


SYNC_EPILOG = """\
The backend subscribes to the node, fetches every item and keeps following it;
"li pubsub get" is then answered from the cache. Progress (items fetched out of
expected) is shown on standard error: a bar on a terminal, lines otherwise.
"""


SEARCH_EPILOG = """\
Filters (-s, -n, -t, -S, -A) and conditions (-F) must all hold. VALUE of -F is read
as JSON when it is valid JSON (5, true, ["a", "b"]), else as text. Operators: ==, !=,
>, >=, <, <=, between (VALUE: [low, high]), in, not_in, overlap, disjoint (VALUE: a
list), like, ilike (VALUE: a pattern, % for any text). Paths are those of the data
the node's analyser parsed (for blogs: title, content, published, updated,
author.name, categories...). Order keys: created, updated, item_id, rank (with -f),
path FIELD; each followed by asc or desc.

examples:
  li pubsub cache search -f "xmpp cache" -t blog
  li pubsub cache search -F title ilike '%hello%' -o path published desc -l 10
  li pubsub cache search -F categories overlap '["xmpp", "python"]' -P
"""


def register(group: Any) -> None:
    """Add the ``li pubsub cache`` group."""
    cache = add_group(
        group, "cache", help="the backend's local cache of pubsub nodes",
        description="The backend keeps some nodes (those an analyser asks to synchronise,\n"
        "and those synchronised with \"li pubsub cache sync\") in its database, follows\n"
        "their events and answers \"li pubsub get\" from there.",
    )
    parser = add_command(
        cache, "get", run=cache_get, render=render_items,
        help="get items of a synchronised node from the cache only (never the service), "
        "also while the profile is disconnected",
    )
    node_arguments(parser)
    get_arguments(parser)
    parser = add_command(
        cache, "sync", run=cache_sync, render=render_node_state,
        help="synchronise a node now (again if it was), showing progress",
        epilog=SYNC_EPILOG,
    )
    node_arguments(parser)
    parser = add_command(cache, "state", run=cache_state, render=render_node_state,
                         help="show a node's cache state (sync state, freshness, items, "
                         "analyser); also while the profile is disconnected")
    node_arguments(parser)
    parser = add_command(
        cache, "purge", run=cache_purge, render=render_purged,
        help="delete cached items (matching every filter given)",
        description="Delete cached items of the profile matching every filter given "
        "(the nodes stay known, their items come back at the next sync). Without "
        "any filter, --all is needed.",
        epilog="examples:\n  li pubsub cache purge -t blog --updated-before 2024-01-01\n"
        "  li pubsub cache purge -s pubsub.example.org -n news",
    )
    add_profile_option(parser)
    _node_filters(parser)
    parser.add_argument("--created-before", metavar="DATE",
                        help="items created before DATE (ISO 8601, UTC if no zone)")
    parser.add_argument("--updated-before", metavar="DATE",
                        help="items last updated before DATE (ISO 8601)")
    parser.add_argument("--all", action="store_true",
                        help="every cached item of the profile (when no filter is given)")
    parser = add_command(
        cache, "reset", run=cache_reset, render=render_reset,
        help="forget every cached node of the profile",
        description="Forget every cached node of the profile, items and analysis: "
        "nodes are analysed (and synchronised) again when next asked for.",
    )
    add_profile_option(parser)
    _register_search(cache)
    parser = add_command(cache, "stats", run=cache_stats, render=render_stats,
                         help="nodes by state, items and bytes cached for the profile")
    add_profile_option(parser)


def _register_search(cache: Any) -> None:
    parser = add_command(
        cache, "search", run=cache_search, render=render_search,
        help="search cached items: full text, parsed data, node filters",
        epilog=SEARCH_EPILOG,
    )
    add_profile_option(parser)
    parser.add_argument("-f", "--fts", metavar="TEXT",
                        help="items whose text holds every word of TEXT (ranked)")
    parser.add_argument("-F", "--field", dest="conditions", nargs=3, action="append",
                        metavar=("PATH", "OP", "VALUE"),
                        help="a condition on parsed data, e.g. -F title ilike '%%xmpp%%' "
                        "(repeatable)")
    _node_filters(parser)
    parser.add_argument("-A", "--analyser", dest="analysers", action="append",
                        metavar="ANALYSER", help="items of nodes matched by this "
                        "analyser, e.g. XEP-0277 (repeatable)")
    parser.add_argument("-o", "--order-by", dest="order", nargs="+", action="append",
                        metavar="ORDER",
                        help="ORDER [FIELD] [DIRECTION], e.g. -o updated desc, "
                        "-o path published (repeatable; default: rank with -f, else "
                        "created desc)")
    parser.add_argument("-l", "--limit", type=parse_count, help="at most LIMIT items "
                        "(default: 50)")
    parser.add_argument("-i", "--index", type=parse_count,
                        help="skip the first INDEX items (paging)")
    parser.add_argument("-P", "--payload", action="store_true",
                        help="show each item's XML")


def _node_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-s", "--service", dest="services", action="append",
                        metavar="SERVICE", help="items of this service (repeatable)")
    parser.add_argument("-n", "--node", dest="nodes", action="append", metavar="NODE",
                        help="items of this node (repeatable)")
    parser.add_argument("-t", "--type", dest="types", action="append", metavar="TYPE",
                        help="items of nodes of this type, e.g. blog (repeatable)")
    parser.add_argument("-S", "--subtype", dest="subtypes", action="append",
                        metavar="SUBTYPE", help="items of nodes of this subtype, e.g. "
                        "comments (repeatable)")


def cache_get(ctx: Context) -> dict[str, Any]:
    return ctx.call("cache_get", **get_params(ctx))


class Progress:
    """Shows ``cache_sync_progress`` signals of one node on standard error.

    A bar redrawn in place on a terminal; one line per state change or per tenth of
    the items otherwise (a log file must not get a line per item).
    """

    WIDTH = 30

    def __init__(self, ctx: Context, profile: str, node: str) -> None:
        self.err = ctx.err
        self.tty = ctx.err.isatty()
        self.profile = profile
        self.node = node
        self.drawn = False
        self._last: tuple[str, int] | None = None

    def __call__(self, name: str, params: dict[str, Any]) -> None:
        if name != "cache_sync_progress" or params.get("profile") != self.profile or (
            params.get("node") != self.node
        ):
            return
        state = str(params.get("state"))
        done = int(params.get("done") or 0)
        expected = params.get("expected")
        if self.tty:
            self._draw(state, done, expected)
        else:
            step = max(1, (expected or 0) // 10)
            key = (state, done // step)
            if key != self._last:
                self._last = key
                self.err.write(f"li: sync of {self.node}: {output.state(state)}, "
                               f"{items_done(done, expected)}\n")
        self.err.flush()

    def _draw(self, state: str, done: int, expected: int | None) -> None:
        text = items_done(done, expected)
        if expected:
            filled = min(self.WIDTH, self.WIDTH * done // expected)
            text = f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {text}"
        self.err.write(f"\r\x1b[Ksyncing {self.node}: {text} ({output.state(state)})")
        self.drawn = True

    def finish(self) -> None:
        """End the bar's line, if one was drawn."""
        if self.drawn:
            self.err.write("\n")
            self.err.flush()
            self.drawn = False


def items_done(done: int, expected: int | None) -> str:
    """``3 of 10 items``, or ``3 items`` when the service did not say how many."""
    if expected:
        return f"{done} of {output.count(expected, 'item')}"
    return output.count(done, "item")


def cache_sync(ctx: Context) -> dict[str, Any]:
    target = node_params(ctx)
    progress = Progress(ctx, target["profile"], target["node"])
    ctx.bridge.on_signal = progress
    ctx.bridge.subscribe(["cache_sync_progress"])
    try:
        result = ctx.call("cache_sync", **target)
    finally:
        progress.finish()
    if result.get("state") == "error":
        raise CommandError(
            f"synchronisation of node {target['node']} failed: "
            f"{result.get('error') or 'see the backend log'}"
        )
    return result


def cache_state(ctx: Context) -> dict[str, Any]:
    return ctx.call("cache_node_state", **node_params(ctx))


def render_node_state(ctx: Context, result: dict[str, Any]) -> None:
    if result.get("state") == "in_progress":
        items = items_done(result.get("items_done") or 0, result.get("items_expected"))
    else:
        items = output.count(result.get("items", result.get("items_done")), "item")
    kind = "/".join(str(v) for v in (result.get("type"), result.get("subtype")) if v)
    freshness = result.get("freshness")
    if freshness is not None:
        note = FRESHNESS_NOTES.get(freshness, "kept up to date by the service's events")
        freshness = f"{freshness} ({note})"
    output.print_fields(
        [("service", result.get("service")), ("node", result.get("node")),
         ("state", output.state(result.get("state"))),
         *([("freshness", freshness)] if freshness else []), ("items", items),
         ("analyser", result.get("analyser") or "(none)"),
         ("type", kind or "(none)"), ("subscribed", result.get("subscribed")),
         *([("error", result["error"])] if result.get("error") else [])],
        ctx.out,
    )


def cache_purge(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    filters = {key: getattr(args, key) for key in (
        "services", "nodes", "types", "subtypes", "created_before", "updated_before")}
    if not any(filters.values()) and not args.all:
        raise UsageError("no filter given: add --all to purge every cached item")
    count = ctx.call("cache_purge", profile=resolve_profile(ctx), **filters)
    return {"purged_items": count}


def render_purged(ctx: Context, result: dict[str, Any]) -> None:
    ctx.out.write(f"{output.count(result['purged_items'], 'cached item')} deleted\n")


def cache_reset(ctx: Context) -> dict[str, Any]:
    return {"forgotten_nodes": ctx.call("cache_reset", profile=resolve_profile(ctx))}


def render_reset(ctx: Context, result: dict[str, Any]) -> None:
    ctx.out.write(f"{output.count(result['forgotten_nodes'], 'cached node')} forgotten\n")


def _json_or_text(value: str) -> Any:
    import json

    try:
        return json.loads(value)
    except ValueError:
        return value


def cache_search(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    query: dict[str, Any] = {}
    for key in ("services", "nodes", "types", "subtypes", "analysers", "fts", "order",
                "limit", "index"):
        value = getattr(args, key)
        if value is not None:
            query[key] = value
    if args.conditions:
        query["conditions"] = [[path, op, _json_or_text(value)]
                               for path, op, value in args.conditions]
    if args.payload:
        query["payload"] = True
    return ctx.call("cache_search", profile=resolve_profile(ctx), query=query)


def _title(parsed: Any) -> str:
    if isinstance(parsed, dict):
        for key in ("title", "content", "name"):
            if isinstance(parsed.get(key), str) and parsed[key].strip():
                text = " ".join(parsed[key].split())
                return text if len(text) <= 60 else text[:59] + "…"
    return ""


def render_search(ctx: Context, result: dict[str, Any]) -> None:
    from libervia.cli.xml_format import XMLError, indent

    hits = result.get("items") or []
    if any("xml" in hit for hit in hits):
        for hit in hits:
            ctx.out.write(f"# {hit.get('service')} {hit.get('node')} {hit.get('id')} "
                          f"(updated {hit.get('updated')})\n")
            try:
                ctx.out.write(indent(hit["xml"]) + "\n\n")
            except XMLError:
                ctx.out.write(hit["xml"] + "\n\n")
    else:
        # ISO 8601 in UTC, to the second: enough to tell items apart in a table
        scores = relative_scores([hit.get("rank") for hit in hits])
        rows = [{**hit, "about": _title(hit.get("parsed")),
                 "updated": str(hit.get("updated") or "")[:19].replace("T", " "),
                 "score": score} for hit, score in zip(hits, scores, strict=True)]
        columns = [("id", "ITEM"), ("service", "SERVICE"), ("node", "NODE"),
                   ("updated", "UPDATED (UTC)")]
        if any(scores):
            columns.append(("score", "SCORE"))
        output.print_table(rows, [*columns, ("about", "TITLE")], ctx.out,
                           empty="(no item found)")
    index = int(result.get("index") or 0)
    total = result.get("total")
    if len(hits) == 1:
        shown = f"item {index + 1}"
    else:
        shown = f"items {index + 1}-{index + len(hits)}" if hits else "no item"
    more = f"; next page: --index {index + len(hits)}" if result.get("more") else ""
    ctx.out.write(f"({shown} of {total}{more})\n")


def relative_scores(ranks: list[float | None]) -> list[str | None]:
    """Full-text ranks as percentages of the best one (``100%``, ``42%``...).

    The raw rank (what ``--output json`` gives) only compares items of one search, and
    on a small cache it is a tiny number (``2e-06``) that means nothing to a person.
    """
    best = max((r for r in ranks if isinstance(r, (int, float))), default=None)
    if not best or best <= 0:
        return [None if r is None else "-" for r in ranks]
    return [None if not isinstance(r, (int, float)) else f"{max(0, round(100 * r / best))}%"
            for r in ranks]


def cache_stats(ctx: Context) -> dict[str, Any]:
    return ctx.call("cache_stats", profile=resolve_profile(ctx))


def render_stats(ctx: Context, result: dict[str, Any]) -> None:
    by_state = result.get("nodes_by_state") or {}
    states = ", ".join(f"{n} {output.state(s)}" for s, n in sorted(by_state.items()))
    output.print_fields(
        [("nodes", f"{result.get('nodes')}{f' ({states})' if states else ''}"),
         ("items", result.get("items")),
         ("size", _size(int(result.get("bytes") or 0)))],
        ctx.out,
    )


def _size(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} bytes"
