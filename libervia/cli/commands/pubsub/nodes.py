"""``li pubsub node``: create, delete, purge, inspect and configure nodes, on the
service."""

from __future__ import annotations

from libervia.cli import output
from libervia.cli.base import Context, add_command, add_group, resolve_profile
from libervia.cli.commands.pubsub.common import (
    form_options,
    node_arguments,
    node_params,
    options_argument,
    render_done,
    service_arguments,
)

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from typing import Any


def register(group: Any) -> None:
    """Add the ``li pubsub node`` group."""
    nodes = add_group(group, "node", help="list, create, delete, purge and inspect nodes")
    parser = add_command(
        nodes, "list", run=node_list, render=render_node_list, aliases=("ls",),
        help="list the nodes of a service (service discovery)",
        description="List the nodes a service announces (disco#items), in its order: "
        "without -s, those of the profile's own account (PEP). A service may keep some "
        "nodes out of the list (those its access model hides from the profile).",
        epilog="examples:\n  li pubsub node list -s pubsub.example.org\n"
        "  li pubsub node list --output json",
    )
    service_arguments(parser)
    parser = add_command(
        nodes, "create", run=node_create, render=render_node_created,
        help="create a node, optionally configured (-O)",
        epilog="example:\n  li pubsub node create -s pubsub.example.org -n news "
        "-O pubsub#max_items=max -O pubsub#access_model=open",
    )
    node_arguments(parser, node_required=False,
                    node_help="name of the node (default: an instant node, named by "
                    "the service)")
    options_argument(parser, "node configuration")
    parser = add_command(nodes, "delete", run=node_delete, render=render_done,
                         help="delete a node and its items, on the service")
    node_arguments(parser)
    parser = add_command(nodes, "purge", run=node_purge, render=render_done,
                         help="retract every item of a node, on the service")
    node_arguments(parser)
    parser = add_command(
        nodes, "info", run=node_info, render=render_node_info,
        help="show a node's metadata and, if allowed, its configuration",
    )
    node_arguments(parser)
    parser = add_command(nodes, "configure", run=node_configure, render=render_done,
                         help="change a node's configuration (-O KEY=VALUE...)")
    node_arguments(parser)
    options_argument(parser, "configuration", required=True)


def node_list(ctx: Context) -> list[dict[str, Any]]:
    return ctx.call("pubsub_node_list", profile=resolve_profile(ctx),
                    service=ctx.args.service)


def render_node_list(ctx: Context, nodes: list[dict[str, Any]]) -> None:
    columns = [("node", "NODE"), ("name", "NAME")]
    if any(n.get("jid") and n["jid"] != nodes[0].get("jid") for n in nodes):
        columns.insert(1, ("jid", "JID"))
    output.print_table(nodes, columns, ctx.out, empty="(no node listed)")
    if nodes:
        ctx.out.write(f"({output.count(len(nodes), 'node')})\n")


def node_create(ctx: Context) -> dict[str, Any]:
    name = ctx.call("pubsub_node_create", **node_params(ctx),
                    options=form_options(ctx.args.options))
    return {"node": name, "created": True}


def render_node_created(ctx: Context, result: dict[str, Any]) -> None:
    ctx.out.write(f"node {result['node']} created\n")


def node_delete(ctx: Context) -> dict[str, Any]:
    ctx.call("pubsub_node_delete", **node_params(ctx))
    return {"node": ctx.args.node, "deleted": True}


def node_purge(ctx: Context) -> dict[str, Any]:
    ctx.call("pubsub_node_purge", **node_params(ctx))
    return {"node": ctx.args.node, "purged": True}


def node_configure(ctx: Context) -> dict[str, Any]:
    options = form_options(ctx.args.options)
    ctx.call("pubsub_node_configure", **node_params(ctx), options=options)
    return {"node": ctx.args.node, "configured": True}


def node_info(ctx: Context) -> dict[str, Any]:
    return ctx.call("pubsub_node_info", **node_params(ctx))


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
