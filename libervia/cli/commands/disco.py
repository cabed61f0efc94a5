"""``li disco``: service discovery (XEP-0030), what an entity is and what it lists."""

from __future__ import annotations

from libervia.cli import output
from libervia.cli.base import Context, add_command, add_group, add_profile_option, resolve_profile

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    import argparse
    from typing import Any


def register(subparsers: Any) -> None:
    group = add_group(
        subparsers, "disco", help="service discovery: what an entity is and lists",
        description="Service discovery (XEP-0030): ask an entity (a server, a service,\n"
        "a contact's client) what it is and supports, or what it lists.\n\n"
        "-p PROFILE defaults to $LIBERVIA_PROFILE, else to the only profile if there\n"
        "is exactly one.",
    )
    parser = add_command(
        group, "info", run=disco_info, render=render_info,
        help="identities, features and extension forms of an entity",
        description="Ask an entity (or one of its nodes) what it is and supports "
        "(disco#info); the backend answers from its cache when it holds the answer "
        "(entity capabilities, or a recent request).",
        epilog="examples:\n  li disco info example.org\n"
        "  li disco info bob@example.org/phone\n"
        "  li disco info pubsub.example.org -n urn:xmpp:microblog:0",
    )
    entity_arguments(parser)
    parser = add_command(
        group, "items", run=disco_items, render=render_items,
        help="the items an entity lists",
        description="Ask an entity (or one of its nodes) what it lists (disco#items): "
        "a server's services, a pubsub service's nodes...",
        epilog="examples:\n  li disco items example.org\n"
        "  li disco items pubsub.example.org",
    )
    entity_arguments(parser)


def entity_arguments(parser: argparse.ArgumentParser) -> None:
    """``-p PROFILE``, ``JID`` and ``-n NODE``."""
    add_profile_option(parser)
    parser.add_argument("jid", metavar="JID", help="the entity to ask")
    parser.add_argument("-n", "--node", metavar="NODE", help="a node of the entity")


def _params(ctx: Context) -> dict[str, Any]:
    return {"profile": resolve_profile(ctx), "jid": ctx.args.jid, "node": ctx.args.node}


def disco_info(ctx: Context) -> dict[str, Any]:
    return ctx.call("disco_info", **_params(ctx))


def disco_items(ctx: Context) -> dict[str, Any]:
    return ctx.call("disco_items", **_params(ctx))


def render_info(ctx: Context, result: dict[str, Any]) -> None:
    ctx.out.write("identities:\n")
    output.print_table(result.get("identities") or [],
                       [("category", "CATEGORY"), ("type", "TYPE"), ("lang", "LANG"),
                        ("name", "NAME")], ctx.out)
    ctx.out.write("\nfeatures:\n")
    features = result.get("features") or []
    ctx.out.write("".join(f"  {f}\n" for f in features) or "(none)\n")
    for form_type, fields in (result.get("forms") or {}).items():
        ctx.out.write(f"\nform {form_type}:\n")
        output.print_table([{"field": k, "value": v} for k, v in fields.items()],
                           [("field", "FIELD"), ("value", "VALUE")], ctx.out)
    if result.get("truncated"):
        ctx.out.write("\n(the answer was over the backend's bounds: cut)\n")


def render_items(ctx: Context, result: dict[str, Any]) -> None:
    output.print_table(result.get("items") or [],
                       [("jid", "JID"), ("node", "NODE"), ("name", "NAME")], ctx.out,
                       empty="(no item)")
