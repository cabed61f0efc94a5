"""``li presence``: the profile's presence, and its contacts'."""

from __future__ import annotations

import argparse

from libervia.cli import output
from libervia.cli.base import Context, add_command, add_group, add_profile_option, resolve_profile

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from typing import Any

SHOWS = ("away", "xa", "dnd", "chat")


def _priority(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if not -128 <= number <= 127:
        raise argparse.ArgumentTypeError("expected an integer from -128 to 127")
    return number


def register(subparsers: Any) -> None:
    group = add_group(subparsers, "presence", help="the profile's presence and its "
                      "contacts'")
    parser = add_command(
        group, "set", run=presence_set, render=render_own,
        help="set the profile's presence",
        description="Set the profile's presence: sent now if the profile is connected, "
        "and kept for its next connections. What is not given is reset (no --show: "
        "available; no --status: none; no --priority: 0).",
    )
    add_profile_option(parser)
    parser.add_argument("--show", choices=SHOWS,
                        help="away, xa (extended away), dnd (do not disturb) or chat "
                        "(default: available)")
    parser.add_argument("--status", metavar="TEXT", help="a status message")
    parser.add_argument("--priority", metavar="N", type=_priority, default=0,
                        help="priority of this resource, from -128 to 127 (default: 0)")
    parser = add_command(
        group, "get", run=presence_get, render=render_get,
        help="show the presences received",
        description="Show the profile's own presence and the presences of its "
        "contacts, each resource with its show, status and priority (the resource that "
        "wins is marked *); with JID, that contact's only.",
    )
    add_profile_option(parser)
    parser.add_argument("jid", nargs="?", metavar="JID",
                        help="a contact (bare JID: every resource; full JID: one)")


def presence_set(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    return ctx.call("presence_set", profile=resolve_profile(ctx), show=args.show,
                    status=args.status, priority=args.priority)


def presence_get(ctx: Context) -> dict[str, Any]:
    params: dict[str, Any] = {"profile": resolve_profile(ctx)}
    if ctx.args.jid is not None:
        params["jid"] = ctx.args.jid
    return ctx.call("presence_get", **params)


def describe(presence: dict[str, Any]) -> str:
    """``away (5): lunch`` for a presence's show, priority and status."""
    text = presence.get("show") or "available"
    if presence.get("priority"):
        text += f" ({presence['priority']})"
    if presence.get("status"):
        text += f": {presence['status']}"
    return text


def render_own(ctx: Context, own: dict[str, Any]) -> None:
    output.print_fields([("show", own.get("show") or "available"),
                         ("status", own.get("status") or ""),
                         ("priority", own.get("priority", 0))], ctx.out)


def render_get(ctx: Context, result: dict[str, Any]) -> None:
    ctx.out.write(f"own presence: {describe(result.get('own') or {})}\n")
    rows = []
    for contact in result.get("contacts", []):
        if not contact.get("resources"):
            rows.append({"jid": contact.get("jid"), "presence": "unavailable"})
        for resource in contact.get("resources", []):
            best = "*" if resource.get("resource") == contact.get("best") else ""
            name = resource.get("resource")
            rows.append({"jid": f"{contact.get('jid')}/{name}" if name else contact.get("jid"),
                         "best": best, "presence": describe(resource)})
    output.print_table(rows, [("jid", "JID"), ("best", ""), ("presence", "PRESENCE")],
                       ctx.out, empty="(no contact available)")
