"""The framework of ``li`` commands.

A command group is a module of :mod:`libervia.cli.commands` listed in
:data:`libervia.cli.main.COMMAND_MODULES`, with a ``register(subparsers)`` function
adding its commands::

    from libervia.cli.base import Context, add_command, add_group

    def register(subparsers):
        group = add_group(subparsers, "profile", help="manage XMPP accounts")
        parser = add_command(group, "delete", run=delete, render=render_delete,
                             help="delete a profile")
        parser.add_argument("name", help="profile to delete")

    def delete(ctx: Context):
        return ctx.call("profile_delete", name=ctx.args.name)

``run(ctx)`` does the work and returns a JSON-serialisable result; ``--output json``
prints it as is, otherwise ``render(ctx, result)`` prints it for a person (without
``render``, the result is printed as fields, a table or a plain value).  A command
printing as it goes (events until Ctrl-C) returns :data:`STREAMED`.  Every command
gets the common options (``--output``, ``--socket``, ``--config``, ``--timeout``), so
they may be written before or after the command names.  Errors are raised as
:class:`~libervia.cli.bridge_client.ClientError` (or :class:`CommandError`) and become
exit status 1.
"""

from __future__ import annotations

import argparse
import sys

from libervia.cli import output
from libervia.cli.bridge_client import BridgeClient, ClientError, find_socket

#: the bridge signal of a profile's connection changes
CONNECTION_SIGNAL = "connection_state"

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import IO, Any


EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


class _Streamed:
    def __repr__(self) -> str:
        return "STREAMED"


#: what ``run`` returns when it printed its output itself, as it came (``li pubsub
#: watch``: a line per event, JSON lines with ``--output json``): nothing more to print
STREAMED = _Streamed()

OUTPUTS = ("text", "json")


class CommandError(ClientError):
    """A command can't do what was asked; the message says why."""

    #: exit status of ``li`` when this error stops a command
    exit_status = EXIT_ERROR


class UsageError(CommandError):
    """The arguments don't make sense together (found after parsing): exit status 2."""

    exit_status = EXIT_USAGE


#: environment variable naming the profile used when ``-p`` is not given
PROFILE_ENV_VAR = "LIBERVIA_PROFILE"


class Context:
    """What a command works with: its arguments, the bridge and the output streams."""

    def __init__(
        self,
        args: argparse.Namespace,
        parser: argparse.ArgumentParser,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
    ) -> None:
        self.args = args
        #: the root parser (for commands describing the command tree)
        self.parser = parser
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._client: BridgeClient | None = None

    @property
    def output(self) -> str:
        """The output format asked for: ``text`` or ``json``."""
        return getattr(self.args, "output", None) or "text"

    @property
    def json(self) -> bool:
        """True when the result must be printed as one JSON document."""
        return self.output == "json"

    def socket_path(self) -> str:
        """The bridge socket, from the options, environment or configuration."""
        return find_socket(
            getattr(self.args, "socket", None), config_path=getattr(self.args, "config", None)
        )

    @property
    def bridge(self) -> BridgeClient:
        """The connection to the backend, opened on first use."""
        if self._client is None:
            self._client = BridgeClient(
                self.socket_path(), timeout=getattr(self.args, "timeout", None)
            )
        return self._client

    def call(self, method: str, **params: Any) -> Any:
        """Call a bridge method (see :meth:`BridgeClient.call`)."""
        return self.bridge.call(method, **params)

    def warn(self, message: str) -> None:
        """Print a warning on standard error (never on standard output)."""
        self.err.write(f"li: warning: {message}\n")

    def close(self) -> None:
        """Close the connection to the backend, if one was opened."""
        if self._client is not None:
            self._client.close()


def add_profile_option(parser: argparse.ArgumentParser) -> None:
    """``-p/--profile``, resolved by :func:`resolve_profile`."""
    parser.add_argument(
        "-p", "--profile", metavar="PROFILE",
        help=f"profile to use (default: ${PROFILE_ENV_VAR}, else the only profile if "
        "there is exactly one)",
    )


def resolve_profile(ctx: Context) -> str:
    """The profile a command works for.

    ``-p`` if given, else ``$LIBERVIA_PROFILE``, else the only profile of the backend
    (one more bridge call); with several profiles and none named, an error listing them.
    """
    import os

    name = getattr(ctx.args, "profile", None) or os.environ.get(PROFILE_ENV_VAR)
    if name:
        return name
    names = [p["name"] for p in ctx.call("profile_list")]
    if len(names) == 1:
        return names[0]
    if not names:
        raise CommandError(
            "there is no profile yet: create one with "
            "\"li profile create NAME --jid JID\""
        )
    raise UsageError(
        f"several profiles exist ({', '.join(names)}): choose one with -p PROFILE "
        f"or ${PROFILE_ENV_VAR}"
    )


def add_common_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every command accepts.

    On sub-commands they default to ``SUPPRESS``, so that a value given before the
    command name is not overwritten.
    """
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    group = parser.add_argument_group("common options")
    group.add_argument(
        "--output", choices=OUTPUTS, default=default("text"),
        help="json: print one JSON document on stdout, for scripts "
        "(default: text, for people)",
    )
    group.add_argument(
        "--socket", metavar="PATH", default=default(None),
        help="bridge socket of the backend (default: $LIBERVIA_BRIDGE_SOCKET, else "
        "[bridge] socket of the configuration, else "
        "$XDG_RUNTIME_DIR/libervia/bridge.sock or {local_dir}/bridge.sock)",
    )
    group.add_argument(
        "--config", metavar="FILE", default=default(None),
        help="backend configuration file read last, as the backend's --config "
        "(default: $LIBERVIA_CONFIG)",
    )
    group.add_argument(
        "--timeout", metavar="SECONDS", type=_positive_float, default=default(60.0),
        help="how long to wait for the backend's answer (default: 60)",
    )


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds, got {value!r}"
        ) from None
    if number <= 0:
        raise argparse.ArgumentTypeError("expected a positive number of seconds")
    return number


#: command words of the command line being run (see :func:`building`)
_command_words: list[str] | None = None


class _Unbuilt:
    """Stands for a parser or group off the command being run: takes any call, keeps
    nothing (argparse parsers cost ``li`` milliseconds to build)."""

    def __getattr__(self, name: str) -> Any:
        return self._ignore

    def _ignore(self, *args: Any, **kwargs: Any) -> _Unbuilt:
        return self


_UNBUILT = _Unbuilt()


class building:  # noqa: N801 (used as a context manager)
    """``with building(words):`` commands registered meanwhile are built only if they
    are on the path of ``words`` (the command line's command words); the others are
    bare names, enough for argparse to list them and not call them invalid choices.
    ``None`` builds everything (``--help`` of the root, completion)."""

    def __init__(self, words: list[str] | None) -> None:
        self.words = words

    def __enter__(self) -> None:
        global _command_words
        self.previous, _command_words = _command_words, self.words

    def __exit__(self, *exc_info: Any) -> None:
        global _command_words
        _command_words = self.previous


def _on_path(subparsers: Any, name: str, aliases: tuple[str, ...] = ()
             ) -> tuple[str, ...] | None:
    """The command path of ``name`` under ``subparsers`` if it is to be built."""
    parent = getattr(subparsers, "li_path", None)
    if parent is None:
        return None
    depth = len(parent)
    words = _command_words
    if words is not None and (depth >= len(words) or words[depth] not in (name, *aliases)):
        return None
    return (*parent, name)


def add_group(
    subparsers: Any, name: str, help: str, description: str | None = None
) -> Any:
    """Add a command group (``li NAME ...``) and return its sub-parsers."""
    if subparsers is _UNBUILT:
        return _UNBUILT
    path = _on_path(subparsers, name)
    if path is None:
        subparsers.add_parser(name, help=help)
        return _UNBUILT
    parser = subparsers.add_parser(
        name, help=help, description=description or help[:1].upper() + help[1:] + ".",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_options(parser, defaults=False)
    group = parser.add_subparsers(
        title="commands", dest=f"{'_'.join(path)}_command", metavar="COMMAND",
        required=True,
    )
    group.li_path = path
    return group


def add_command(
    subparsers: Any,
    name: str,
    run: Callable[[Context], Any],
    help: str,
    render: Callable[[Context, Any], None] | None = None,
    description: str | None = None,
    epilog: str | None = None,
    aliases: tuple[str, ...] = (),
) -> argparse.ArgumentParser:
    """Add a command; return its parser, for the command's own arguments.

    :param run: does the work, returns the result (JSON-serialisable)
    :param render: prints the result for a person (default: :func:`render_default`)
    :param help: one line shown in the group's command list
    :param description: shown by ``--help`` (default: ``help``)
    :param epilog: shown at the end of ``--help`` (examples...)
    """
    if subparsers is _UNBUILT:
        return _UNBUILT  # type: ignore[return-value]
    if _on_path(subparsers, name, aliases) is None:
        subparsers.add_parser(name, help=help, aliases=list(aliases))
        return _UNBUILT  # type: ignore[return-value]
    parser = subparsers.add_parser(
        name, help=help, aliases=list(aliases),
        description=description or help[:1].upper() + help[1:] + ".",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_options(parser, defaults=False)
    parser.set_defaults(run=run, render=render or render_default)
    return parser


def render_default(ctx: Context, result: Any) -> None:
    """Print a result without a renderer of its own."""
    if isinstance(result, dict):
        output.print_fields(list(result.items()), ctx.out)
    elif isinstance(result, list) and all(isinstance(r, dict) for r in result):
        keys = list(dict.fromkeys(k for row in result for k in row))
        output.print_table(result, [(k, k.upper()) for k in keys], ctx.out)
    elif result is not None:
        ctx.out.write(f"{output.text(result)}\n")


def watch_signals(ctx: Context, profile: str, signal: str,
                  handle: Callable[[dict], None], what: str, title: str) -> None:
    """Give ``handle`` the params of each ``signal`` of ``profile``, as they come,
    until Ctrl-C (the end: not an error); the profile's connection changes are said
    on standard error.

    :param what: one of what is watched, for people (``event``)
    :param title: what is watched, for people (``pubsub events``)
    """
    bridge = ctx.bridge
    bridge.subscribe([signal, CONNECTION_SIGNAL])
    state = (ctx.call("profile_info", name=profile).get("connection") or {}).get("state")
    if state != "connected":
        ctx.warn(f"profile {profile} is {state}: no {what} comes until it is connected "
                 f"(li profile connect {profile})")
    if ctx.err.isatty():
        ctx.err.write(f"li: watching the {title} of {profile} (Ctrl-C to stop)\n")
        ctx.err.flush()
    bridge.wait_forever()
    try:
        for name, params in bridge.signals():
            if params.get("profile") != profile:
                continue
            if name == CONNECTION_SIGNAL:
                ctx.warn(f"profile {profile} is {params.get('state')}"
                         + (f" ({params['error']})" if params.get("error") else ""))
            elif name == signal:
                handle(params)
    except KeyboardInterrupt:
        # Ctrl-C is how one stops watching: not an error
        pass
