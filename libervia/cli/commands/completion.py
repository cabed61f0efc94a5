"""``li completion``: shell completion generated from the command tree.

The script is built from the argparse parsers themselves, so every command added to
``li`` is completed without further work.
"""

from __future__ import annotations

import argparse

from libervia.cli.base import Context, add_command

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


SHELLS = ("bash",)
ROOT = "li"
#: metavars naming a file or folder: their values are completed as paths
PATH_METAVARS = frozenset(("FILE", "PATH", "DIR", "FOLDER"))
FILE_MARK = "@file"
#: metavar naming a profile: its values are the backend's profiles, asked when completing
PROFILE_METAVAR = "PROFILE"
PROFILE_MARK = "@profile"
#: key (after the command path) of what a command's positional arguments complete to
ARGUMENT_KEY = "@arg"

EPILOG = """\
install for the current user:
  li completion bash > ~/.local/share/bash-completion/completions/li
or for the current shell only:
  source <(li completion bash)
"""


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "completion", run=completion, render=render_completion,
        help="print a shell completion script",
        description="Print the shell completion script of li (and libervia-cli).",
        epilog=EPILOG,
    )
    parser.add_argument("shell", choices=SHELLS, help="shell to complete in")


def _subparsers_action(parser: argparse.ArgumentParser) -> Any:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _option_values(action: argparse.Action) -> str | None:
    """What an option's value completes to, or ``None`` if it takes no value."""
    if action.nargs == 0:
        return None
    if action.choices is not None:
        return " ".join(str(c) for c in action.choices)
    if action.metavar in PATH_METAVARS:
        return FILE_MARK
    if action.metavar == PROFILE_METAVAR:
        return PROFILE_MARK
    return ""


def walk(
    parser: argparse.ArgumentParser, path: str = ROOT
) -> Iterator[tuple[str, list[str], dict[str, str]]]:
    """Yield (command path, words completing it, {option: values}) for the whole tree.

    Options taking no value are in the words only; options taking a value are in both,
    with their choices, :data:`FILE_MARK` for paths, :data:`PROFILE_MARK` for profiles,
    or ``""`` for free values.  A positional argument naming a profile is in the values
    as :data:`ARGUMENT_KEY`.
    """
    words: list[str] = []
    values: dict[str, str] = {}
    children: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                words.append(name)
                children.append((name, child))
        elif action.option_strings:
            if action.help == argparse.SUPPRESS:
                continue
            words.extend(action.option_strings)
            option_values = _option_values(action)
            if option_values is not None:
                for option in action.option_strings:
                    values[option] = option_values
        elif action.choices is not None:
            words.extend(str(c) for c in action.choices)
        elif action.metavar == PROFILE_METAVAR:
            values[ARGUMENT_KEY] = PROFILE_MARK
    yield path, words, values
    for name, child in children:
        yield from walk(child, f"{path} {name}")


BASH_FUNCTION = r"""
_li_profiles() {
    # the backend's profiles (nothing if it is not running); the first line is a header
    "${COMP_WORDS[0]}" profile list 2>/dev/null | awk 'NR > 1 { print $1 }'
}
_li() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local path=li i word
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        if [[ -n ${_li_values["$path $word"]+set} ]]; then
            ((i++))  # the option's value
        elif [[ -n ${_li_words["$path $word"]+set} ]]; then
            path="$path $word"
        fi
    done
    if ((COMP_CWORD > 1)) && [[ -n ${_li_values["$path $prev"]+set} ]]; then
        local values=${_li_values["$path $prev"]}
        if [[ $values == @file ]]; then
            COMPREPLY=($(compgen -f -- "$cur"))
        elif [[ $values == @profile ]]; then
            COMPREPLY=($(compgen -W "$(_li_profiles)" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$values" -- "$cur"))
        fi
        return 0
    fi
    local words=${_li_words[$path]}
    if [[ $cur != -* && ${_li_values["$path @arg"]} == @profile ]]; then
        words="$words $(_li_profiles)"
    fi
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _li li libervia-cli
"""


def bash_script(parser: argparse.ArgumentParser) -> str:
    """The bash completion script of ``parser``'s command tree."""
    import shlex
    word_lines = []
    value_lines = []
    for path, words, values in walk(parser):
        word_lines.append(f"    [{shlex.quote(path)}]={shlex.quote(' '.join(words))}")
        for option, option_values in values.items():
            key = shlex.quote(f"{path} {option}")
            value_lines.append(f"    [{key}]={shlex.quote(option_values)}")
    return "\n".join([
        "# bash completion of li (libervia-cli), generated by \"li completion bash\"",
        "declare -gA _li_words=(",
        *word_lines,
        ")",
        "declare -gA _li_values=(",
        *value_lines,
        ")",
    ]) + BASH_FUNCTION


def completion(ctx: Context) -> dict[str, str]:
    from libervia.cli.main import build_parser  # the whole tree, not just this command

    return {"shell": ctx.args.shell, "script": bash_script(build_parser())}


def render_completion(ctx: Context, result: dict[str, str]) -> None:
    ctx.out.write(result["script"])
