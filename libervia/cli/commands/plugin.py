"""``li plugin``: the backend's plugins."""

from __future__ import annotations

from libervia.cli import output
from libervia.cli.base import Context, add_command, add_group

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from typing import Any


STATES = ("loaded", "disabled", "skipped", "failed", "refused")


def register(subparsers: Any) -> None:
    group = add_group(subparsers, "plugin", help="plugins of the backend")
    parser = add_command(
        group, "list", run=plugin_list, render=render_list, aliases=("ls",),
        help="list the plugins found and whether they are loaded",
        description="List the plugins the backend found, loaded ones first, with the "
        "reason why each other one is not loaded.",
    )
    parser.add_argument(
        "-s", "--state", choices=STATES, action="append",
        help="only plugins in this state (repeatable)",
    )


def plugin_list(ctx: Context) -> list[dict[str, Any]]:
    plugins = ctx.call("plugin_list")
    if ctx.args.state:
        plugins = [p for p in plugins if p.get("state") in ctx.args.state]
    return plugins


def render_list(ctx: Context, plugins: list[dict[str, Any]]) -> None:
    rows = [
        {**p, "about": p.get("reason") or p.get("description") or p.get("name") or ""}
        for p in plugins
    ]
    output.print_table(
        rows,
        [("import_name", "PLUGIN"), ("state", "STATE"), ("version", "VERSION"),
         ("distribution", "FROM"), ("about", "DESCRIPTION / REASON")],
        ctx.out,
        empty="(no plugin)",
    )
