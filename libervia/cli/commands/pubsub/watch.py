"""``li pubsub watch``: the pubsub events a profile receives, as they come, until
Ctrl-C (bridge signal ``pubsub_event``)."""

from __future__ import annotations

from libervia.cli import output
from libervia.cli.base import (
    STREAMED,
    Context,
    add_command,
    add_profile_option,
    resolve_profile,
    watch_signals,
)

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from typing import Any


#: the bridge signal of pubsub events
EVENT_SIGNAL = "pubsub_event"

WATCH_EPILOG = """\
Events come from the nodes the profile is subscribed to ("li pubsub subscribe",
"li pubsub cache sync") and, as its server sends them, from the nodes of its own
account (PEP), whether the backend caches them or not. In text, each event is a line
(new items follow it as indented XML); with --output json, each event is one JSON
object on one line (JSON lines): profile, service, node, type (items, retract, purge,
delete, configuration), item_ids, items (XML), options, received (UTC).
Ctrl-C stops watching (exit status 0).

examples:
  li pubsub watch -s pubsub.example.org -n news
  li pubsub watch --output json | jq -r 'select(.type == "items") | .item_ids[]'
"""


def register(group: Any) -> None:
    """Add ``watch`` to the ``li pubsub`` group."""
    parser = add_command(
        group, "watch", run=watch, help="print the pubsub events received, as they come "
        "(until Ctrl-C)", epilog=WATCH_EPILOG,
    )
    add_profile_option(parser)
    parser.add_argument("-s", "--service", metavar="SERVICE",
                        help="only events of this service (default: every service)")
    parser.add_argument("-n", "--node", metavar="NODE",
                        help="only events of this node (default: every node)")


def _matches(wanted: str | None, value: Any, fold: bool = False) -> bool:
    if wanted is None:
        return True
    if not isinstance(value, str):
        return False
    return value.casefold() == wanted.casefold() if fold else value == wanted


def watch(ctx: Context) -> Any:
    def handle(params: dict[str, Any]) -> None:
        if _matches(ctx.args.service, params.get("service"), fold=True) and _matches(
                ctx.args.node, params.get("node")):
            print_event(ctx, params)

    watch_signals(ctx, resolve_profile(ctx), EVENT_SIGNAL, handle, "event",
                  "pubsub events")
    return STREAMED


def print_event(ctx: Context, event: dict[str, Any]) -> None:
    """One event: a JSON line, or a line for people (and the new items' XML)."""
    import time

    if ctx.json:
        import json

        received = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ctx.out.write(json.dumps({**event, "received": received}, ensure_ascii=False,
                                 separators=(",", ":")) + "\n")
        ctx.out.flush()
        return
    where = f"[{time.strftime('%H:%M:%S')}] {event.get('service')} {event.get('node')}"
    ctx.out.write(f"{where}: {describe(event)}\n")
    if event.get("type") == "items":
        from libervia.cli.xml_format import XMLError, indent

        for item in event.get("items") or []:
            try:
                text = indent(str(item))
            except XMLError:
                text = str(item)
            # under the event's line
            ctx.out.write("".join(f"  {line}\n" for line in text.splitlines()))
    ctx.out.flush()


def describe(event: dict[str, Any]) -> str:
    """What happened, in words: ``2 items published: a, b``, ``node deleted``..."""
    kind = event.get("type")
    ids = [str(i) for i in event.get("item_ids") or [] if i is not None]
    listed = f": {', '.join(ids)}" if ids else ""
    if kind == "items":
        return f"{output.count(len(event.get('item_ids') or ()), 'item')} published{listed}"
    if kind == "retract":
        return f"{output.count(len(ids), 'item')} retracted{listed}"
    if kind == "purge":
        return "purged (every item retracted)"
    if kind == "delete":
        return "node deleted"
    if kind == "configuration":
        options = event.get("options")
        if isinstance(options, dict) and options:
            return "configuration changed: " + ", ".join(
                f"{key}={output.text(value)}" for key, value in options.items())
        return "configuration changed"
    return f"{kind} event"
