"""``li pubsub``: items, nodes and subscriptions (XEP-0060), and the local cache.

Every command works for a profile (``-p``, see :func:`libervia.cli.base.resolve_profile`)
on a service (``-s``, default: the profile's own account, i.e. PEP).
"""

from __future__ import annotations

import sys

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

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    import argparse
    from typing import Any

ORDER_BY = ("creation", "modification")

GET_EPILOG = """\
Without -M, -i nor -m, the service decides how many items it answers. When the
node is synchronised in the backend's cache, the cache answers (see -C).

examples:
  li pubsub get -s pubsub.example.org -n news -M 10
  li pubsub get -n urn:xmpp:microblog:0 -m 20 -b ''     # last page of 20 items
  li pubsub get -n urn:xmpp:microblog:0 -i first-post --output json
"""

SET_EPILOG = """\
The XML is an <item/> element, or only its payload (wrapped in an <item/> then).

examples:
  echo '<entry xmlns="http://www.w3.org/2005/Atom"><title>Hi</title></entry>' \\
      | li pubsub set -n urn:xmpp:microblog:0 -i hello
  li pubsub set -s pubsub.example.org -n news post.xml -O pubsub#access_model=open
"""

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


def register(subparsers: Any) -> None:
    group = add_group(
        subparsers, "pubsub", help="publish-subscribe: items, nodes, subscriptions, cache",
        description="Publish-subscribe (XEP-0060): get and publish items, manage nodes\n"
        "and subscriptions, and the backend's local cache of nodes.\n\n"
        "-p PROFILE defaults to $LIBERVIA_PROFILE, else to the only profile if there\n"
        "is exactly one; -s SERVICE defaults to the profile's own account (PEP).",
    )

    parser = add_command(
        group, "get", run=get, render=render_items,
        help="get items of a node (from the cache when the node is synchronised)",
        epilog=GET_EPILOG,
    )
    _node_arguments(parser)
    _get_arguments(parser)
    parser.add_argument(
        "-C", "--no-cache", dest="use_cache", action="store_false",
        help="ask the service even if the node is in the cache",
    )

    parser = add_command(
        group, "set", run=publish, render=render_published,
        help="publish an item (XML from standard input or a file)", epilog=SET_EPILOG,
    )
    _node_arguments(parser)
    parser.add_argument(
        "file", nargs="?", default="-", metavar="FILE",
        help="file holding the item's XML (default: - for standard input)",
    )
    parser.add_argument(
        "-i", "--item", metavar="ID",
        help="id of the item (default: the one in the XML, else chosen by the service); "
        "publishing with the id of an existing item replaces it",
    )
    _options_argument(parser, "publish options (XEP-0060 §7.1.5)")

    parser = add_command(
        group, "retract", run=retract, render=render_done,
        help="retract (delete) items of a node",
    )
    _node_arguments(parser)
    parser.add_argument(
        "-i", "--item", metavar="ID", dest="item_ids", action="append", required=True,
        help="id of an item to retract (repeatable)",
    )
    parser.add_argument(
        "--no-notify", dest="notify", action="store_false",
        help="don't ask the service to notify the subscribers",
    )

    _register_node(group)

    parser = add_command(
        group, "subscribe", run=subscribe, render=render_subscription,
        help="subscribe the profile to a node (to receive its events)",
    )
    _node_arguments(parser)
    _options_argument(parser, "subscription options")
    parser = add_command(
        group, "unsubscribe", run=unsubscribe, render=render_done,
        help="unsubscribe the profile from a node",
    )
    _node_arguments(parser)
    parser.add_argument("--subid", help="subscription id (when there are several)")
    parser = add_command(
        group, "subscriptions", run=subscriptions, render=render_subscriptions,
        help="list the profile's subscriptions on a service",
    )
    _node_arguments(parser, node_required=False)

    _register_cache(group)


def _register_node(group: Any) -> None:
    nodes = add_group(group, "node", help="create, delete, purge and inspect nodes")
    parser = add_command(
        nodes, "create", run=node_create, render=render_node_created,
        help="create a node, optionally configured (-O)",
        epilog="example:\n  li pubsub node create -s pubsub.example.org -n news "
        "-O pubsub#max_items=max -O pubsub#access_model=open",
    )
    _node_arguments(parser, node_required=False,
                    node_help="name of the node (default: an instant node, named by "
                    "the service)")
    _options_argument(parser, "node configuration")
    parser = add_command(nodes, "delete", run=node_delete, render=render_done,
                         help="delete a node and its items, on the service")
    _node_arguments(parser)
    parser = add_command(nodes, "purge", run=node_purge, render=render_done,
                         help="retract every item of a node, on the service")
    _node_arguments(parser)
    parser = add_command(
        nodes, "info", run=node_info, render=render_node_info,
        help="show a node's metadata and, if allowed, its configuration",
    )
    _node_arguments(parser)
    parser = add_command(nodes, "configure", run=node_configure, render=render_done,
                         help="change a node's configuration (-O KEY=VALUE...)")
    _node_arguments(parser)
    _options_argument(parser, "configuration", required=True)


def _register_cache(group: Any) -> None:
    cache = add_group(
        group, "cache", help="the backend's local cache of pubsub nodes",
        description="The backend keeps some nodes (those an analyser asks to synchronise,\n"
        "and those synchronised with \"li pubsub cache sync\") in its database, follows\n"
        "their events and answers \"li pubsub get\" from there.",
    )
    parser = add_command(
        cache, "get", run=cache_get, render=render_items,
        help="get items of a synchronised node from the cache only (never the service)",
    )
    _node_arguments(parser)
    _get_arguments(parser)
    parser = add_command(
        cache, "sync", run=cache_sync, render=render_node_state,
        help="synchronise a node now (again if it was), showing progress",
        epilog=SYNC_EPILOG,
    )
    _node_arguments(parser)
    parser = add_command(cache, "state", run=cache_state, render=render_node_state,
                         help="show a node's cache state (sync state, items, analyser)")
    _node_arguments(parser)
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
                        help="items cached before DATE (ISO 8601, UTC if no zone)")
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
    parser.add_argument("-l", "--limit", type=_count, help="at most LIMIT items "
                        "(default: 50)")
    parser.add_argument("-i", "--index", type=_count,
                        help="skip the first INDEX items (paging)")
    parser.add_argument("-P", "--payload", action="store_true",
                        help="show each item's XML")


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
        rows = [{**hit, "about": _title(hit.get("parsed")),
                 "updated": str(hit.get("updated") or "")[:19].replace("T", " "),
                 "rank": None if hit.get("rank") is None else f"{hit['rank']:.3g}"}
                for hit in hits]
        columns = [("id", "ITEM"), ("service", "SERVICE"), ("node", "NODE"),
                   ("updated", "UPDATED (UTC)")]
        if any(hit.get("rank") is not None for hit in hits):
            columns.append(("rank", "RANK"))
        output.print_table(rows, [*columns, ("about", "TITLE")], ctx.out,
                           empty="(no item found)")
    index = int(result.get("index") or 0)
    total = result.get("total")
    shown = f"items {index + 1}-{index + len(hits)}" if hits else "no item"
    more = f"; next page: --index {index + len(hits)}" if result.get("more") else ""
    ctx.out.write(f"({shown} of {total}{more})\n")


# arguments


def _node_arguments(parser: argparse.ArgumentParser, node_required: bool = True,
                    node_help: str = "name of the node") -> None:
    add_profile_option(parser)
    parser.add_argument(
        "-s", "--service", metavar="SERVICE",
        help="JID of the pubsub service (default: the profile's own account, PEP)",
    )
    parser.add_argument("-n", "--node", metavar="NODE", required=node_required,
                        help=node_help)


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


def _get_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-M", "--max-items", metavar="MAX", type=_count,
                        help="the last MAX published items")
    parser.add_argument("-i", "--item", metavar="ID", dest="item_ids", action="append",
                        help="only this item (repeatable)")
    parser.add_argument("-m", "--rsm-max", metavar="RSM_MAX", type=_count,
                        help="page size (RSM, XEP-0059)")
    page = parser.add_mutually_exclusive_group()
    page.add_argument("-a", "--after", metavar="ITEM",
                      help="the page after this item id (RSM cursor)")
    page.add_argument("-b", "--before", metavar="ITEM",
                      help="the page before this item id; '' for the last page")
    page.add_argument("--index", metavar="N", type=_count,
                      help="the page starting at the Nth item (from 0)")
    parser.add_argument("-o", "--order-by", choices=ORDER_BY,
                        help="order of the items (XEP-0413; default: the service's)")


def _options_argument(parser: argparse.ArgumentParser, what: str,
                      required: bool = False) -> None:
    parser.add_argument(
        "-O", "--option", metavar="KEY=VALUE", dest="options", action="append",
        type=_option, required=required,
        help=f"{what}: a data form field, e.g. pubsub#access_model=open "
        "(repeatable; a key given twice is a list)",
    )


def _count(value: str) -> int:
    import argparse

    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return number


def _option(value: str) -> tuple[str, str]:
    import argparse

    key, sep, option_value = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return key.strip(), option_value


def _options(pairs: list[tuple[str, str]] | None) -> dict[str, Any] | None:
    if not pairs:
        return None
    options: dict[str, Any] = {}
    for key, value in pairs:
        if key in options:
            previous = options[key]
            options[key] = [*previous, value] if isinstance(previous, list) else [
                previous, value]
        else:
            options[key] = value
    return options


def _target(ctx: Context) -> dict[str, Any]:
    return {"profile": resolve_profile(ctx), "service": ctx.args.service,
            "node": ctx.args.node}


def _get_params(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    rsm = {key: value for key, value in (
        ("max", args.rsm_max), ("after", args.after), ("before", args.before),
        ("index", args.index)) if value is not None}
    params = _target(ctx)
    params.update(max_items=args.max_items, item_ids=args.item_ids, rsm=rsm or None,
                  order_by=args.order_by)
    return params


# items


def get(ctx: Context) -> dict[str, Any]:
    return ctx.call("pubsub_get", **_get_params(ctx), use_cache=ctx.args.use_cache)


def render_items(ctx: Context, result: dict[str, Any]) -> None:
    from libervia.cli.xml_format import XMLError, indent

    for number, item in enumerate(result.get("items") or []):
        if number:
            ctx.out.write("\n")
        try:
            ctx.out.write(indent(item) + "\n")
        except XMLError:
            ctx.out.write(item + "\n")
    metadata = result.get("metadata") or {}
    count = len(result.get("items") or [])
    rsm = metadata.get("rsm") or {}
    about = [f"{count} item{'s' if count != 1 else ''}",
             "from the cache" if metadata.get("cached") else "from the service"]
    if rsm:
        about.append(", ".join(f"{key} {rsm[key]}" for key in
                               ("index", "count", "first", "last") if key in rsm))
    ctx.out.write(f"{chr(10) if count else ''}({'; '.join(about)})\n")


def _read_item(ctx: Context) -> str:
    if ctx.args.file == "-":
        if sys.stdin.isatty():
            ctx.err.write("li: reading the item's XML from standard input "
                          "(Ctrl-D to end)\n")
        return sys.stdin.read()
    try:
        with open(ctx.args.file, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise CommandError(f"can't read {ctx.args.file}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise CommandError(f"{ctx.args.file} is not UTF-8 text") from None


def item_xml(text: str, item_id: str | None) -> str:
    """The XML to publish: ``text`` checked, its declaration dropped, ``item_id`` set.

    :raise CommandError: not well-formed XML, or two different ids
    """
    from libervia.cli.xml_format import XMLError, parse

    text = text.strip()
    if text.startswith("<?xml"):
        text = text[text.find("?>") + 2:].lstrip()
    if not text:
        raise CommandError("no XML given: the item is empty")
    try:
        root = parse(text)
    except XMLError as e:
        raise CommandError(f"the item is not well-formed XML: {e}") from None
    if item_id is None:
        return text
    from xml.sax.saxutils import quoteattr

    if root.name.rpartition(":")[2] != "item":
        return (f'<item xmlns="http://jabber.org/protocol/pubsub" id={quoteattr(item_id)}>'
                f"{text}</item>")
    attributes = dict(zip(root.attributes[::2], root.attributes[1::2], strict=True))
    if "id" in attributes:
        if attributes["id"] != item_id:
            raise CommandError(f"the <item/> has id {attributes['id']!r} and -i says "
                               f"{item_id!r}: give only one")
        return text
    # the text starts with the root's start tag ("<item" or "<prefix:item")
    split = 1 + len(root.name)
    return f"{text[:split]} id={quoteattr(item_id)}{text[split:]}"


def publish(ctx: Context) -> dict[str, Any]:
    xml = item_xml(_read_item(ctx), ctx.args.item)
    params = _target(ctx)
    ids = ctx.call("pubsub_publish", **params, items=[xml],
                   options=_options(ctx.args.options))
    return {"service": params["service"], "node": params["node"], "item_ids": ids}


def render_published(ctx: Context, result: dict[str, Any]) -> None:
    ids = result.get("item_ids") or []
    ctx.out.write(f"published item {', '.join(ids)}\n" if ids else "published\n")


def retract(ctx: Context) -> dict[str, Any]:
    ctx.call("pubsub_retract", **_target(ctx), item_ids=ctx.args.item_ids,
             notify=ctx.args.notify)
    return {"node": ctx.args.node, "retracted": ctx.args.item_ids}


def render_done(ctx: Context, result: dict[str, Any]) -> None:
    done = [key for key in result if key != "node"]
    what = done[0] if done else "done"
    value = result.get(what)
    detail = f" {output.text(value)}" if value not in (True, None) else ""
    ctx.out.write(f"node {result.get('node')}: {what}{detail}\n")


# nodes


def node_create(ctx: Context) -> dict[str, Any]:
    name = ctx.call("pubsub_node_create", **_target(ctx),
                    options=_options(ctx.args.options))
    return {"node": name, "created": True}


def render_node_created(ctx: Context, result: dict[str, Any]) -> None:
    ctx.out.write(f"node {result['node']} created\n")


def node_delete(ctx: Context) -> dict[str, Any]:
    ctx.call("pubsub_node_delete", **_target(ctx))
    return {"node": ctx.args.node, "deleted": True}


def node_purge(ctx: Context) -> dict[str, Any]:
    ctx.call("pubsub_node_purge", **_target(ctx))
    return {"node": ctx.args.node, "purged": True}


def node_configure(ctx: Context) -> dict[str, Any]:
    options = _options(ctx.args.options)
    ctx.call("pubsub_node_configure", **_target(ctx), options=options)
    return {"node": ctx.args.node, "configured": True}


def node_info(ctx: Context) -> dict[str, Any]:
    return ctx.call("pubsub_node_info", **_target(ctx))


def render_node_info(ctx: Context, result: dict[str, Any]) -> None:
    identities = [f"{i.get('category')}/{i.get('type')}"
                  for i in result.get("identities") or []]
    output.print_fields([("identities", identities)], ctx.out)
    for title, key in (("metadata", "meta_data"), ("configuration", "configuration")):
        values = result.get(key)
        ctx.out.write(f"\n{title}:\n")
        if values is None and key == "configuration":
            reason = result.get("configuration_error") or "not allowed"
            ctx.out.write(f"(not available: {reason})\n")
            continue
        rows = [{"field": k, "value": v} for k, v in (values or {}).items()]
        output.print_table(rows, [("field", "FIELD"), ("value", "VALUE")], ctx.out)
    features = result.get("features") or []
    if features:
        ctx.out.write("\nfeatures:\n" + "".join(f"  {f}\n" for f in features))


# subscriptions


def subscribe(ctx: Context) -> dict[str, Any]:
    return ctx.call("pubsub_subscribe", **_target(ctx),
                    options=_options(ctx.args.options))


def render_subscription(ctx: Context, result: dict[str, Any]) -> None:
    subid = f" (subid {result['subid']})" if result.get("subid") else ""
    ctx.out.write(f"node {result.get('node')}: {result.get('state')}{subid}\n")


def unsubscribe(ctx: Context) -> dict[str, Any]:
    ctx.call("pubsub_unsubscribe", **_target(ctx), subid=ctx.args.subid)
    return {"node": ctx.args.node, "unsubscribed": True}


def subscriptions(ctx: Context) -> list[dict[str, Any]]:
    return ctx.call("pubsub_subscriptions", **_target(ctx))


def render_subscriptions(ctx: Context, result: list[dict[str, Any]]) -> None:
    output.print_table(result, [("node", "NODE"), ("state", "STATE"), ("subid", "SUBID")],
                       ctx.out, empty="(no subscription)")


# cache


def cache_get(ctx: Context) -> dict[str, Any]:
    return ctx.call("cache_get", **_get_params(ctx))


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
                total = f"/{expected}" if expected else ""
                self.err.write(f"li: sync of {self.node}: {state}, {done}{total} items\n")
        self.err.flush()

    def _draw(self, state: str, done: int, expected: int | None) -> None:
        if expected:
            filled = min(self.WIDTH, self.WIDTH * done // expected)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            text = f"[{bar}] {done}/{expected} items"
        else:
            text = f"{done} items"
        self.err.write(f"\r\x1b[Ksyncing {self.node}: {text} ({state})")
        self.drawn = True

    def finish(self) -> None:
        """End the bar's line, if one was drawn."""
        if self.drawn:
            self.err.write("\n")
            self.err.flush()
            self.drawn = False


def cache_sync(ctx: Context) -> dict[str, Any]:
    target = _target(ctx)
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
    return ctx.call("cache_node_state", **_target(ctx))


def render_node_state(ctx: Context, result: dict[str, Any]) -> None:
    expected = result.get("items_expected")
    items = f"{result.get('items_done')}" + (f"/{expected}" if expected else "")
    kind = "/".join(str(v) for v in (result.get("type"), result.get("subtype")) if v)
    output.print_fields(
        [("service", result.get("service")), ("node", result.get("node")),
         ("state", result.get("state")), ("items", items),
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
    ctx.out.write(f"{result['purged_items']} cached items deleted\n")


def cache_reset(ctx: Context) -> dict[str, Any]:
    return {"forgotten_nodes": ctx.call("cache_reset", profile=resolve_profile(ctx))}


def render_reset(ctx: Context, result: dict[str, Any]) -> None:
    ctx.out.write(f"{result['forgotten_nodes']} cached nodes forgotten\n")


def cache_stats(ctx: Context) -> dict[str, Any]:
    return ctx.call("cache_stats", profile=resolve_profile(ctx))


def render_stats(ctx: Context, result: dict[str, Any]) -> None:
    by_state = result.get("nodes_by_state") or {}
    states = ", ".join(f"{n} {s}" for s, n in sorted(by_state.items()))
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
