"""li's building blocks: finding the socket, printing, shell completion."""

import io
import shutil
import subprocess

import pytest

from libervia.cli import output
from libervia.cli.bridge_client import ClientError, find_socket
from libervia.cli.commands.completion import bash_script
from libervia.cli.main import build_parser

# finding the socket


@pytest.fixture
def env(tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    return {
        "XDG_RUNTIME_DIR": str(runtime),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }


def write_user_config(env, text):
    folder = f"{env['XDG_CONFIG_HOME']}/libervia"
    import os

    os.makedirs(folder, exist_ok=True)
    with open(f"{folder}/libervia.conf", "w") as f:
        f.write(text)


def test_socket_option_wins_over_everything(env, tmp_path):
    env["LIBERVIA_BRIDGE_SOCKET"] = "/from/env.sock"
    write_user_config(env, "[bridge]\nsocket = /from/config.sock\n")
    assert find_socket("/from/option.sock", env=env) == "/from/option.sock"


def test_environment_wins_over_the_configuration(env):
    env["LIBERVIA_BRIDGE_SOCKET"] = "/from/env.sock"
    write_user_config(env, "[bridge]\nsocket = /from/config.sock\n")
    assert find_socket(env=env) == "/from/env.sock"


def test_configured_socket_is_used_and_explicit_config_file_is_read_last(env, tmp_path):
    write_user_config(env, "[bridge]\nsocket = /from/user.sock\n")
    assert find_socket(env=env) == "/from/user.sock"
    explicit = tmp_path / "explicit.conf"
    explicit.write_text("[bridge]\nsocket = /from/explicit.sock\n")
    assert find_socket(env=env, config_path=str(explicit)) == "/from/explicit.sock"
    env["LIBERVIA_CONFIG"] = str(explicit)
    assert find_socket(env=env) == "/from/explicit.sock"


def test_default_is_the_runtime_folder_then_local_dir(env, tmp_path):
    assert find_socket(env=env) == f"{env['XDG_RUNTIME_DIR']}/libervia/bridge.sock"
    del env["XDG_RUNTIME_DIR"]
    assert find_socket(env=env) == f"{env['XDG_DATA_HOME']}/libervia/bridge.sock"
    write_user_config(env, f"[DEFAULT]\nlocal_dir = {tmp_path}/local\n")
    assert find_socket(env=env) == f"{tmp_path}/local/bridge.sock"


def test_missing_explicit_config_file_is_an_error(env, tmp_path):
    with pytest.raises(ClientError, match="does not exist"):
        find_socket(env=env, config_path=str(tmp_path / "nope.conf"))


def test_broken_config_file_is_an_error_not_a_traceback(env, tmp_path):
    broken = tmp_path / "broken.conf"
    broken.write_text("no section header\n")
    with pytest.raises(ClientError, match="can't read the configuration"):
        find_socket(env=env, config_path=str(broken))


# printing


def test_table_columns_are_aligned_and_values_readable():
    out = io.StringIO()
    output.print_table(
        [{"name": "a", "on": True, "tags": ["x", "y"]}, {"name": "long name", "on": False}],
        [("name", "NAME"), ("on", "ON"), ("tags", "TAGS")],
        out,
    )
    assert out.getvalue().splitlines() == [
        "NAME       ON   TAGS",
        "a          yes  x, y",
        "long name  no",
    ]


def test_empty_table_says_so():
    out = io.StringIO()
    output.print_table([], [("a", "A")], out, empty="(no plugin)")
    assert out.getvalue() == "(no plugin)\n"


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.9, "59s"), (3725, "1h 2m 5s"),
                                           (90000, "1d 1h 0s")])
def test_durations_are_short(seconds, text):
    assert output.duration(seconds) == text


# shell completion


def complete(script: str, *words: str) -> list[str]:
    """What bash proposes for the last of ``words`` (typed after ``li``)."""
    words_list = " ".join(f"'{w}'" for w in ("li", *words))
    test = (
        f"{script}\n"
        f"COMP_WORDS=({words_list}); COMP_CWORD={len(words)}\n"
        "_li; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    result = subprocess.run(["bash", "-c", test], capture_output=True, text=True, check=True)
    return sorted(line for line in result.stdout.splitlines() if line)


@pytest.fixture(scope="module")
def script():
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    return bash_script(build_parser())


def test_completion_proposes_commands_at_each_level(script):
    assert {"backend", "plugin", "completion"} <= set(complete(script, ""))
    assert complete(script, "backend", "st") == ["status"]
    assert complete(script, "plugin", "") == ["--config", "--help", "--output", "--socket",
                                              "--timeout", "-h", "list", "ls"]


def test_completion_knows_option_values_and_skips_them(script):
    assert complete(script, "--output", "j") == ["json"]
    assert complete(script, "--output", "json", "back") == ["backend"]
    assert complete(script, "plugin", "list", "--state", "f") == ["failed"]
    assert "--state" in complete(script, "plugin", "list", "--state", "failed", "--")
    assert complete(script, "completion", "") == sorted(
        ["bash", "--config", "--help", "--output", "--socket", "--timeout", "-h"]
    )


# building only what is needed


@pytest.mark.parametrize("argv, name", [
    (["backend", "status"], "backend"),
    (["--output", "json", "--socket", "/s", "plugin", "list"], "plugin"),
    (["--timeout", "3", "--", "backend"], None),
    (["--help"], None),
    ([], None),
])
def test_command_name_skips_options_and_their_values(argv, name):
    from libervia.cli.main import command_name

    assert command_name(argv) == name


def test_only_the_command_run_is_built_but_others_stay_known():
    parser = build_parser(only="backend")
    args = parser.parse_args(["backend", "status"])
    assert args.run.__module__ == "libervia.cli.commands.backend"
    with pytest.raises(SystemExit):
        parser.parse_args(["nope"])  # still an error, with every name listed


def test_completion_command_covers_the_whole_tree(capsys):
    from tests.unit.cli.conftest import run_li_sync

    status, out, __ = run_li_sync("completion", "bash")
    assert status == 0
    assert "'li plugin list'" in out and "'li backend status'" in out
