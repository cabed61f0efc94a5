"""``li pubsub subscribe``, ``unsubscribe`` and ``subscriptions``: the profile's
subscriptions to nodes."""

from __future__ import annotations

from libervia.cli import output
from libervia.cli.base import Context, add_command
from libervia.cli.commands.pubsub.common import (
    form_options,
    node_arguments,
    node_params,
    options_argument,
    render_done,
)

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from typing import Any


def register(group: Any) -> None:
    """Add ``subscribe``, ``unsubscribe`` and ``subscriptions`` to the ``li pubsub``
    group."""
    parser = add_command(
        group, "subscribe", run=subscribe, render=render_subscription,
        help="subscribe the profile to a node (to receive its events)",
    )
    node_arguments(parser)
    options_argument(parser, "subscription options")
    parser = add_command(
        group, "unsubscribe", run=unsubscribe, render=render_done,
        help="unsubscribe the profile from a node",
    )
    node_arguments(parser)
    parser.add_argument("--subid", help="subscription id (when there are several)")
    parser = add_command(
        group, "subscriptions", run=subscriptions, render=render_subscriptions,
        help="list the profile's subscriptions on a service",
    )
    node_arguments(parser, node_required=False)


def subscribe(ctx: Context) -> dict[str, Any]:
    return ctx.call("pubsub_subscribe", **node_params(ctx),
                    options=form_options(ctx.args.options))


def render_subscription(ctx: Context, result: dict[str, Any]) -> None:
    subid = f" (subid {result['subid']})" if result.get("subid") else ""
    ctx.out.write(f"node {result.get('node')}: {result.get('state')}{subid}\n")


def unsubscribe(ctx: Context) -> dict[str, Any]:
    ctx.call("pubsub_unsubscribe", **node_params(ctx), subid=ctx.args.subid)
    return {"node": ctx.args.node, "unsubscribed": True}


def subscriptions(ctx: Context) -> list[dict[str, Any]]:
    return ctx.call("pubsub_subscriptions", **node_params(ctx))


def render_subscriptions(ctx: Context, result: list[dict[str, Any]]) -> None:
    output.print_table(result, [("node", "NODE"), ("state", "STATE"), ("subid", "SUBID")],
                       ctx.out, empty="(no subscription)")
