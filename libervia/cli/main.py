"""``li`` (also ``libervia-cli``): the command-line frontend of the Libervia backend.

Only the standard library is imported here, and only the command modules listed in
:data:`COMMAND_MODULES`: ``li`` answers in a few milliseconds plus the backend's time.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from libervia.cli import output
from libervia.cli.base import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    STREAMED,
    CommandError,
    Context,
    add_common_options,
    building,
)
from libervia.cli.bridge_client import BridgeError, ClientError

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from typing import IO, Any


#: modules of libervia.cli.commands, each with a register(subparsers) function adding
#: the top-level command of the same name; the order is the order of ``li --help``
COMMAND_MODULES = ("backend", "plugin", "profile", "roster", "presence", "message",
                   "pubsub", "disco", "completion")
#: options of the root parser taking a value (to find the command name in argv)
_VALUED_OPTIONS = frozenset(("--output", "--socket", "--config", "--timeout"))

DESCRIPTION = """\
Command-line frontend of the Libervia backend.

li talks to a running backend through its bridge socket. Every command accepts
--output json to print one JSON document for scripts. Exit status: 0 success,
1 error, 2 usage error.
"""

EPILOG = """\
examples:
  li backend status
  li profile create alice --jid alice@example.org
  li profile connect alice
  li pubsub get -p alice -s pubsub.example.org -n news -M 10
  li disco info example.org
  li plugin list --output json
  li completion bash > ~/.local/share/bash-completion/completions/li

"li COMMAND --help" explains each command.
"""


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors say how to get help, and exit with status 2; a mistyped command,
    choice or option gets the names it is close to ("did you mean ...?")."""

    #: the parser of the command being parsed (the deepest one reached): whose options
    #: an unrecognized one is compared with
    _parsing: argparse.ArgumentParser | None = None

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        ArgumentParser._parsing = self
        return super().parse_known_args(*args, **kwargs)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        try:
            super()._check_value(action, value)  # type: ignore[misc]
        except argparse.ArgumentError as e:
            if isinstance(value, str) and action.choices is not None:
                e.message += did_you_mean(value, [str(c) for c in action.choices])
            raise

    def error(self, message: str) -> None:  # type: ignore[override]
        prefix = "unrecognized arguments: "
        if message.startswith(prefix) and ArgumentParser._parsing is not None:
            options = list(ArgumentParser._parsing._option_string_actions)
            words = message[len(prefix):].split()
            message += "".join(did_you_mean(word.partition("=")[0], options, most=1)
                               for word in words if word.startswith("-"))
        if "required: COMMAND" in message:
            commands = [
                name for action in self._actions
                if isinstance(action, argparse._SubParsersAction)
                for name in action.choices
            ]
            message = f"a command is needed: {', '.join(commands)}"
        self.print_usage(sys.stderr)
        self.exit(
            EXIT_USAGE,
            f"{self.prog}: error: {message}\n(see \"{self.prog} --help\")\n",
        )


def did_you_mean(word: str, names: list[str], most: int = 3) -> str:
    """`` (did you mean 'get'?)`` when ``word`` is close to some of ``names``, else
    ``""``."""
    import difflib

    close = difflib.get_close_matches(word, names, n=most, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {' or '.join(repr(name) for name in close)}?)"


def command_words(argv: list[str]) -> list[str]:
    """The words of ``argv`` that may name commands (``pubsub``, ``cache``, ``sync``...).

    Options and the values of the common options are skipped; words after the
    command's own options are there too, which does not matter: the command path is
    the first words.
    """
    words = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--":
            break
        elif arg.startswith("-"):
            skip = arg in _VALUED_OPTIONS
        else:
            words.append(arg)
    return words


def command_name(argv: list[str]) -> str | None:
    """The top-level command named in ``argv``, if any (options skipped)."""
    words = command_words(argv)
    return words[0] if words else None


def build_parser(
    prog: str = "li", only: str | None = None, path: list[str] | None = None
) -> argparse.ArgumentParser:
    """The command tree.

    :param only: build this top-level command fully and the others as bare names:
        enough to run it, and much cheaper once there are many commands (``li`` builds
        the whole tree only for ``li --help`` and completion)
    :param path: the command words of the command line (see :func:`command_words`):
        like ``only``, at every level, so that ``li pubsub get`` builds neither
        ``li pubsub node`` nor ``li pubsub cache``
    """
    if path:
        only = path[0]
    parser = ArgumentParser(
        prog=prog, description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_options(parser, defaults=True)
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True,
        parser_class=ArgumentParser,
    )
    subparsers.li_path = ()
    with building(path if only is not None and path else None):
        for name in COMMAND_MODULES:
            if only is not None and name != only:
                subparsers.add_parser(name)  # known, so that it is not an "invalid choice"
                continue
            module = importlib.import_module(f"libervia.cli.commands.{name}")
            module.register(subparsers)
    return parser


def _print_error(ctx: Context, error: ClientError) -> None:
    if isinstance(error, BridgeError):
        ctx.err.write(f"li: error: {error.message} [{error.type}]\n")
        document = error.as_dict()
    else:
        ctx.err.write(f"li: error: {error}\n")
        document = {"type": type(error).__name__, "message": str(error)}
    if ctx.json:
        output.print_json({"error": document}, ctx.out)


def main(
    argv: list[str] | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Run ``li`` with ``argv``; return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    words = command_words(argv)
    known = bool(words) and words[0] in COMMAND_MODULES
    parser = build_parser(path=words if known else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    ctx = Context(args, parser, out=out, err=err)
    try:
        result = args.run(ctx)
        if result is STREAMED:
            pass
        elif ctx.json:
            output.print_json(result, ctx.out)
        else:
            args.render(ctx, result)
        ctx.out.flush()
    except CommandError as e:
        _print_error(ctx, e)
        return e.exit_status
    except ClientError as e:
        _print_error(ctx, e)
        return EXIT_ERROR
    except KeyboardInterrupt:
        ctx.err.write("li: interrupted\n")
        return 130
    except BrokenPipeError:
        # output piped to a command that stopped reading (li ... | head): not an error
        # of ours; keep Python from complaining when it flushes stdout at exit
        sys.stdout = None  # type: ignore[assignment]
        return EXIT_OK
    finally:
        ctx.close()
    return EXIT_OK


def run() -> None:
    """Entry point of the ``li`` and ``libervia-cli`` scripts."""
    sys.exit(main())


if __name__ == "__main__":
    run()
