"""``li backend``: status, version and bridge information of the running backend."""

from __future__ import annotations

import sys

from libervia.cli import output
from libervia.cli.base import CommandError, Context, add_command, add_group
from libervia.cli.bridge_client import PROTOCOL_MAJOR

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from typing import Any



def register(subparsers: Any) -> None:
    group = add_group(
        subparsers, "backend", help="state of the running backend",
        description="Ask the running backend about itself.",
    )
    add_command(
        group, "status", run=status, render=render_status,
        help="show whether the backend is ready, its version and uptime",
    )
    add_command(
        group, "version", run=version, render=render_version,
        help="show the versions of the backend, of li and of the bridge protocol",
    )
    add_command(
        group, "info", run=info, render=render_info,
        help="list the bridge methods and signals the backend offers",
    )
    parser = add_command(
        group, "call", run=call, render=render_call,
        help="call any bridge method (for scripts and debugging)",
        description="Call a bridge method by name and print its result as JSON. "
        "\"li backend info\" lists the methods.",
        epilog='example:\n  li backend call plugin_list\n'
        '  echo \'{"signals": ["backend_status"]}\' | li backend call subscribe -',
    )
    parser.add_argument("method", help="name of the bridge method")
    parser.add_argument(
        "params", nargs="?", default="{}",
        help='parameters as a JSON object, e.g. \'{"name": "alice"}\', or - to read '
        "it from standard input (default: {})",
    )


def status(ctx: Context) -> dict[str, Any]:
    return ctx.call("backend_status")


def render_status(ctx: Context, result: dict[str, Any]) -> None:
    output.print_fields(
        [
            ("status", result.get("status")),
            ("ready", result.get("ready")),
            ("version", result.get("version")),
            ("uptime", output.duration(result.get("uptime") or 0)),
        ],
        ctx.out,
    )


def _cli_version() -> str:
    # imported here: importlib.metadata costs milliseconds every other command spares
    from importlib import metadata

    try:
        return metadata.version("libervia-backend")
    except metadata.PackageNotFoundError:
        return "unknown"


def _check_protocol(ctx: Context, protocol_version: str) -> None:
    major = protocol_version.split(".", 1)[0]
    if major != str(PROTOCOL_MAJOR):
        ctx.warn(
            f"the backend speaks bridge protocol {protocol_version} and li speaks "
            f"{PROTOCOL_MAJOR}.x: install the same version of both"
        )


def version(ctx: Context) -> dict[str, Any]:
    info = ctx.call("bridge_info")
    _check_protocol(ctx, str(info.get("protocol_version", "")))
    return {
        "backend": info.get("backend_version"),
        "cli": _cli_version(),
        "protocol": info.get("protocol_version"),
    }


def render_version(ctx: Context, result: dict[str, Any]) -> None:
    output.print_fields(
        [
            ("backend", result["backend"]),
            ("li", result["cli"]),
            ("bridge protocol", result["protocol"]),
        ],
        ctx.out,
    )


def call(ctx: Context) -> Any:
    import json

    text = sys.stdin.read() if ctx.args.params == "-" else ctx.args.params
    try:
        params = json.loads(text)
    except ValueError as e:
        raise CommandError(f"PARAMS is not valid JSON: {e}") from None
    if not isinstance(params, dict):
        raise CommandError('PARAMS must be a JSON object, e.g. {"name": "alice"}')
    return ctx.call(ctx.args.method, **params)


def render_call(ctx: Context, result: Any) -> None:
    output.print_json(result, ctx.out)


def info(ctx: Context) -> dict[str, Any]:
    result = ctx.call("bridge_info")
    _check_protocol(ctx, str(result.get("protocol_version", "")))
    return result


def render_info(ctx: Context, result: dict[str, Any]) -> None:
    output.print_fields(
        [
            ("protocol", f"{result.get('protocol')} {result.get('protocol_version')}"),
            ("backend", result.get("backend_version")),
            ("max frame size", f"{result.get('max_frame_size')} bytes"),
        ],
        ctx.out,
    )
    for title, key in (("methods", "methods"), ("signals", "signals")):
        ctx.out.write(f"\n{title}:\n")
        rows = [{"name": n, "doc": d} for n, d in (result.get(key) or {}).items()]
        output.print_table(rows, [("name", "NAME"), ("doc", "DESCRIPTION")], ctx.out)
