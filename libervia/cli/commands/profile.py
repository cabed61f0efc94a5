"""``li profile``: the XMPP accounts of the backend.

A password never goes on the command line (other users see it in the process list,
shells keep it in their history): ``li`` asks for it without echo on a terminal, or
reads one line from standard input.
"""

from __future__ import annotations

import os
import sys

from libervia.cli import output
from libervia.cli.base import CommandError, Context, add_command, add_group
from libervia.cli.bridge_client import BridgeError

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from typing import IO, Any


CREATE_EPILOG = """\
The password is asked for without echo when standard input is a terminal; otherwise
one line is read from standard input (--password-stdin: no prompt either way). It is
never given on the command line.

examples:
  li profile create alice --jid alice@example.org
  pass show xmpp/alice | li profile create alice --jid alice@example.org --password-stdin
  li profile create test --jid test@localhost --host 127.0.0.1 --port 5222 \\
      --ca-file ./ca.pem --mechanisms SCRAM-SHA-256-PLUS,SCRAM-SHA-256
"""


def register(subparsers: Any) -> None:
    group = add_group(
        subparsers, "profile", help="XMPP accounts of the backend",
        description="Create, inspect, connect and delete profiles: the XMPP accounts "
        "the backend holds.",
    )

    parser = add_command(
        group, "create", run=create, render=render_info,
        help="create a profile (an XMPP account the backend uses)",
        epilog=CREATE_EPILOG,
    )
    parser.add_argument("name", help="name of the new profile (what -p PROFILE names)")
    parser.add_argument("--jid", required=True, help="the account's JID (user@server)")
    _password_arguments(parser)
    _connection_arguments(parser, modify=False)

    parser = add_command(
        group, "modify", run=modify, render=render_modified,
        help="change a profile's connection settings (from its next connection)",
        description="Change how a profile connects. Only the settings given change; an "
        "empty value ('') puts one back to its default. A connected profile keeps its "
        "connection as it is: the settings apply from its next connection "
        "(\"li profile disconnect\" then \"li profile connect\"); autoconnect, at the "
        "next start of the backend.",
        epilog=MODIFY_EPILOG,
    )
    _name_argument(parser)
    _connection_arguments(parser, modify=True)

    parser = add_command(
        group, "list", run=profile_list, render=render_list, aliases=("ls",),
        help="list the profiles and their connection state",
    )
    parser = add_command(
        group, "delete", run=delete, render=render_done("deleted"),
        help="delete a profile and everything the backend stored for it",
        description="Delete a profile (disconnecting it first) with everything the "
        "backend stored for it, its cache included. The account on the server is "
        "not touched. li asks for confirmation when standard input is a terminal; "
        "otherwise (scripts) --yes is required.",
    )
    _name_argument(parser)
    parser.add_argument("-y", "--yes", action="store_true",
                        help="delete without asking for confirmation")
    parser = add_command(
        group, "connect", run=connect, render=render_connection,
        help="connect a profile (answers once connected)",
    )
    _name_argument(parser)
    parser = add_command(
        group, "disconnect", run=disconnect, render=render_done("disconnected"),
        help="disconnect a profile (it stays; \"li profile connect\" reconnects it)",
    )
    _name_argument(parser)
    parser = add_command(
        group, "info", run=info, render=render_info,
        help="show a profile: JID, connection state and what the connection negotiated",
        description="Show a profile's settings and connection: JID, state, negotiated "
        "SASL mechanism, channel binding, TLS version and downgrade protection "
        "(XEP-0474).",
    )
    _name_argument(parser)
    parser = add_command(
        group, "password", run=password, render=render_done("password changed"),
        help="change the password the backend uses for a profile",
        description="Change the password the backend uses for a profile (not the "
        "password of the account on the server). It is read as for "
        "\"li profile create\".",
    )
    _name_argument(parser)
    _password_arguments(parser)


def _connection_arguments(parser: Any, modify: bool) -> None:
    """How a profile connects: the options of ``create`` and ``modify``.

    With ``modify``, every option defaults to ``None`` (unchanged) and the on/off ones
    get their ``--no-`` form.
    """
    import argparse

    reset = " ('' for the default)" if modify else ""
    switch = argparse.BooleanOptionalAction if modify else "store_true"
    parser.add_argument(
        "--host", help="server host name or address to connect to (default: found "
        f"from the JID's domain, with DNS SRV records){reset}",
    )
    parser.add_argument(
        "--port", type=_port_or_default if modify else _port,
        help=f"port to connect to (default: 5222, or 5223 with --direct-tls){reset}",
    )
    parser.add_argument(
        "--ca-file", metavar="FILE",
        help="PEM file of the certificate authorities to trust, for a private server "
        f"(default: the system's){reset}",
    )
    parser.add_argument(
        "--direct-tls", action=switch, default=None if modify else False,
        help="TLS from the first byte (XEP-0368) instead of STARTTLS",
    )
    parser.add_argument(
        "--mechanisms", metavar="M,...", type=_mechanisms,
        help="SASL mechanisms allowed, comma separated (default: all, the strongest "
        f"the server offers wins){reset}",
    )
    parser.add_argument(
        "--autoconnect", action=switch, default=None if modify else False,
        help="connect when the backend starts",
    )


def _password_arguments(parser: Any) -> None:
    import argparse

    class RefusePassword(argparse.Action):
        # without it, "--password SECRET" would be taken for --password-stdin (argparse
        # accepts abbreviations) and SECRET echoed back as an unrecognized argument
        def __call__(self, parser: Any, *args: Any) -> None:
            parser.error("a password is never given on the command line: li asks for "
                         "it, or reads it from standard input with --password-stdin")

    parser.add_argument(
        "--password-stdin", action="store_true",
        help="read the password from standard input (one line), without a prompt; "
        "this is also what li does when standard input is not a terminal",
    )
    parser.add_argument("--password", nargs="?", action=RefusePassword,
                        help=argparse.SUPPRESS)


def _name_argument(parser: Any) -> None:
    parser.add_argument("name", metavar="PROFILE", help="the profile")


def _port(value: str) -> int:
    import argparse

    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {value!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port {port} is out of range (1-65535)")
    return port


def _port_or_default(value: str) -> int | str:
    return "" if value == "" else _port(value)


def _mechanisms(value: str) -> list[str]:
    return [m.strip().upper() for m in value.split(",") if m.strip()]


def read_password(
    from_stdin: bool, prompt: str, stdin: IO[str] | None = None
) -> str:
    """The password, asked without echo on a terminal, else one line of ``stdin``.

    :raise CommandError: nothing was given
    """
    stdin = stdin or sys.stdin
    if stdin.isatty():
        # a terminal: never echo what is typed (--password-stdin only drops the prompt)
        import getpass

        try:
            value = getpass.getpass("" if from_stdin else prompt)
        except EOFError:
            value = ""
    else:
        value = stdin.readline()
        if value.endswith("\n"):
            value = value[:-1]
        if value.endswith("\r"):
            value = value[:-1]
    if not value:
        raise CommandError("no password given (empty line or end of input)")
    return value


def _ca_file(value: str) -> str:
    # the backend runs elsewhere: a relative path means nothing to it
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isfile(path):
        raise CommandError(f"CA file {value} does not exist or is not a file")
    return path


def create(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    ca_file = None if args.ca_file is None else _ca_file(args.ca_file)
    params = dict(
        name=args.name, jid=args.jid, host=args.host, port=args.port,
        direct_tls=args.direct_tls, ca_file=ca_file, mechanisms=args.mechanisms,
        autoconnect=args.autoconnect,
    )
    # a wrong name, JID or option, or a name taken, is said before the password is
    # typed (a backend too old to check says it after)
    try:
        ctx.call("profile_create", check_only=True, **params)
    except BridgeError as e:
        if e.type != "InvalidParams" or "check_only" not in e.message:
            raise
    secret = read_password(args.password_stdin, f"password of {args.jid}: ")
    return ctx.call("profile_create", password=secret, **params)


MODIFY_EPILOG = """\
examples:
  li profile modify alice --ca-file ./ca.pem       # trust a private server's CA
  li profile modify alice --direct-tls --port 5223
  li profile modify alice --host '' --port ''       # back to DNS
  li profile modify alice --no-autoconnect
"""

#: settings of ``modify`` (as arguments and in the bridge call), with their labels
_SETTINGS = {"host": "server host", "port": "port", "direct_tls": "direct TLS",
             "ca_file": "CA file", "mechanisms": "mechanisms allowed",
             "autoconnect": "autoconnect"}


def modify(ctx: Context) -> dict[str, Any]:
    from libervia.cli.base import UsageError

    args = ctx.args
    params: dict[str, Any] = {}
    reset = []
    for key in _SETTINGS:
        value = getattr(args, key)
        if value is None:
            continue
        if value == "" or value == []:
            reset.append(key)
        elif key == "ca_file":
            params[key] = _ca_file(value)
        else:
            params[key] = value
    if not params and not reset:
        raise UsageError("nothing to change: give at least one of --host, --port, "
                         "--ca-file, --direct-tls, --mechanisms, --autoconnect")
    return ctx.call("profile_modify", name=args.name, **params, reset=reset or None)


def render_modified(ctx: Context, result: dict[str, Any]) -> None:
    name = result.get("name")
    changed = [_SETTINGS.get(key, key) for key in result.get("changed") or []]
    if not changed:
        ctx.out.write(f"profile {name}: unchanged (the settings given are its own)\n")
        return
    ctx.out.write(f"profile {name}: {', '.join(changed)} changed\n")
    render_info(ctx, {key: value for key, value in result.items() if key != "connection"})
    state = (result.get("connection") or {}).get("state")
    if set(result.get("changed") or ()) - {"autoconnect"}:
        if state in (None, "disconnected", "failed"):
            ctx.out.write("The new settings apply when it next connects "
                          f"(li profile connect {name}).\n")
        else:
            ctx.out.write(f"It is {state} with the previous settings: the new ones apply "
                          f"from its next connection (li profile disconnect {name}, then "
                          f"li profile connect {name}).\n")
    if "autoconnect" in (result.get("changed") or ()):
        when = "connects" if (result.get("options") or {}).get("autoconnect") else \
            "no longer connects"
        ctx.out.write(f"It {when} by itself from the next start of the backend.\n")


def profile_list(ctx: Context) -> list[dict[str, Any]]:
    return ctx.call("profile_list")


def render_list(ctx: Context, profiles: list[dict[str, Any]]) -> None:
    output.print_table(
        profiles,
        [("name", "PROFILE"), ("jid", "JID"), ("state", "STATE"),
         ("autoconnect", "AUTOCONNECT")],
        ctx.out,
        empty='(no profile: create one with "li profile create NAME --jid JID")',
    )


def confirm(ctx: Context, question: str, stdin: IO[str] | None = None) -> None:
    """Ask ``question`` on a terminal; anything but yes stops the command.

    Without a terminal nobody can answer: the command stops, saying to add ``--yes``
    (a script must say what it means, rather than delete by default).

    :raise CommandError: the answer was not yes
    :raise UsageError: standard input is not a terminal
    """
    from libervia.cli.base import UsageError

    stdin = stdin or sys.stdin
    if not stdin.isatty():
        raise UsageError("standard input is not a terminal, so li can't ask for "
                         "confirmation: add --yes")
    ctx.err.write(f"{question} [y/N] ")
    ctx.err.flush()
    answer = stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise CommandError("cancelled: nothing was deleted")


def delete(ctx: Context) -> dict[str, Any]:
    if not ctx.args.yes:
        ctx.call("profile_info", name=ctx.args.name)  # no question about a missing one
        confirm(ctx, f"delete profile {ctx.args.name} and everything the backend stored "
                "for it (its cache included; the account on the server stays)?")
    ctx.call("profile_delete", name=ctx.args.name)
    return {"profile": ctx.args.name, "deleted": True}


def connect(ctx: Context) -> dict[str, Any]:
    return ctx.call("profile_connect", name=ctx.args.name)


def disconnect(ctx: Context) -> dict[str, Any]:
    ctx.call("profile_disconnect", name=ctx.args.name)
    return {"profile": ctx.args.name, "state": "disconnected"}


def info(ctx: Context) -> dict[str, Any]:
    return ctx.call("profile_info", name=ctx.args.name)


def password(ctx: Context) -> dict[str, Any]:
    secret = read_password(ctx.args.password_stdin, f"new password of {ctx.args.name}: ")
    ctx.call("profile_set_password", name=ctx.args.name, password=secret)
    return {"profile": ctx.args.name, "password_changed": True}


def render_done(what: str) -> Any:
    def render(ctx: Context, result: dict[str, Any]) -> None:
        ctx.out.write(f"profile {result['profile']}: {what}\n")

    return render


def _connection_fields(connection: dict[str, Any]) -> list[tuple[str, Any]]:
    state = connection.get("state")
    if connection.get("error"):
        state = f"{state} ({connection['error']})"
    fields: list[tuple[str, Any]] = [("state", state)]
    if connection.get("sasl_mechanism") or connection.get("bound_jid"):
        protection = connection.get("downgrade_protection")
        fields += [
            ("bound JID", connection.get("bound_jid")),
            ("SASL mechanism", connection.get("sasl_mechanism")),
            ("channel binding", connection.get("channel_binding") or "none"),
            ("TLS version", connection.get("tls_version") or "none (clear text!)"),
            ("downgrade protection",
             "yes (XEP-0474)" if protection else "no (the server sent no SASL hash)"),
        ]
    return fields


def render_connection(ctx: Context, connection: dict[str, Any]) -> None:
    output.print_fields(
        [("profile", connection.get("profile")), ("JID", connection.get("jid")),
         *_connection_fields(connection)],
        ctx.out,
    )


def render_info(ctx: Context, result: dict[str, Any]) -> None:
    options = result.get("options") or {}
    fields: list[tuple[str, Any]] = [("profile", result.get("name")),
                                     ("JID", result.get("jid"))]
    if "connection" in result:
        fields += _connection_fields(result["connection"])
    port = options.get("port")
    fields += [
        ("server", f"{options.get('host') or '(from DNS)'}"
                   f"{f' port {port}' if port else ''}"
                   f"{' (direct TLS)' if options.get('direct_tls') else ' (STARTTLS)'}"),
        ("CA file", options.get("ca_file") or "(system)"),
        ("mechanisms allowed", options.get("mechanisms") or "all"),
        ("autoconnect", options.get("autoconnect")),
    ]
    output.print_fields(fields, ctx.out)
