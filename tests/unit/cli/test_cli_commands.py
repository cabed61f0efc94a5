"""``li`` against a real backend, and its behaviour without one."""

import json
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import defer, threads

import libervia.backend
from libervia.cli.bridge_client import BridgeClient, BridgeError, ProtocolError
from libervia.cli.main import build_parser
from tests.unit.cli.conftest import run_li_sync

# with a backend


@pytest_twisted.ensureDeferred
async def test_backend_status_json_is_one_document_saying_ready(run_li):
    status, out, err = await run_li("backend", "status", "--output", "json")
    assert (status, err) == (0, "")
    result = json.loads(out)
    assert result["status"] == "ready"
    assert result["ready"] is True
    assert result["version"] == libervia.backend.__version__
    assert result["uptime"] >= 0


@pytest_twisted.ensureDeferred
async def test_backend_status_text_is_readable(run_li):
    status, out, __ = await run_li("backend", "status")
    assert status == 0
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["status"].strip() == "ready"
    assert lines["ready"].strip() == "yes"


@pytest_twisted.ensureDeferred
async def test_output_option_is_accepted_before_the_command_too(run_li):
    status, out, __ = await run_li("--output", "json", "backend", "version")
    assert status == 0
    assert json.loads(out) == {
        "backend": libervia.backend.__version__,
        "cli": libervia.backend.__version__,
        "protocol": libervia.backend.bridge.PROTOCOL_VERSION,
    }


@pytest_twisted.ensureDeferred
async def test_plugin_list_shows_each_plugin_and_its_state(run_li):
    status, out, __ = await run_li("plugin", "list")
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["PLUGIN", "STATE", "VERSION"]
    assert rows[0].split()[:2] == ["XEP-0059", "loaded"]

    status, out, __ = await run_li("plugin", "list", "--output", "json")
    plugins = json.loads(out)
    assert [(p["import_name"], p["state"]) for p in plugins] == [("XEP-0059", "loaded")]
    assert plugins[0]["distribution"] == "libervia-backend"

    status, out, __ = await run_li("plugin", "ls", "--state", "failed", "--output", "json")
    assert (status, json.loads(out)) == (0, [])


@pytest_twisted.ensureDeferred
async def test_backend_info_lists_methods_and_signals(run_li):
    status, out, __ = await run_li("backend", "info")
    assert status == 0
    assert "backend_status" in out and "plugin_list" in out
    assert "signals:" in out


@pytest_twisted.ensureDeferred
async def test_client_raises_typed_errors_of_the_backend(backend):
    path = backend.getServiceNamed("bridge").path

    def call_unknown():
        with BridgeClient(path) as client:
            client.call("no_such_method")

    with pytest.raises(BridgeError) as caught:
        await threads.deferToThread(call_unknown)
    assert caught.value.type == "MethodNotFound"
    assert caught.value.code == -32601


@pytest_twisted.ensureDeferred
async def test_client_receives_subscribed_signals_while_calling(backend):
    path = backend.getServiceNamed("bridge").path
    backend.bridge.register_signal("test_tick", "")
    backend.bridge.register_method(
        "tick", lambda: backend.bridge.emit_signal("test_tick", n=1)
    )
    received = []

    def subscribe_and_call():
        with BridgeClient(path, on_signal=lambda *s: received.append(s)) as client:
            client.subscribe(["test_tick"])
            return client.call("tick")

    assert await threads.deferToThread(subscribe_and_call) == 1
    assert received == [("test_tick", {"n": 1})]


@pytest_twisted.ensureDeferred
async def test_client_reports_a_backend_that_hangs_up(backend):
    path = backend.getServiceNamed("bridge").path

    def oversized():
        with BridgeClient(path) as client:
            client.call("bridge_info", padding="x" * (2 * 1024 * 1024))

    with pytest.raises((BridgeError, ProtocolError)) as caught:
        await threads.deferToThread(oversized)
    if isinstance(caught.value, BridgeError):
        assert caught.value.type == "FrameTooLarge"


# without a backend


def test_backend_not_running_says_how_to_start_it(li_env, socket_dir):
    status, out, err = run_li_sync("--socket", str(socket_dir / "none.sock"),
                                   "backend", "status")
    assert status == 1
    assert out == ""
    assert "not running" in err
    assert "libervia-backend" in err and "twistd -n" in err


def test_errors_are_a_json_document_with_output_json(li_env, socket_dir):
    status, out, err = run_li_sync("backend", "status", "--output", "json",
                                   "--socket", str(socket_dir / "none.sock"))
    assert status == 1
    error = json.loads(out)["error"]
    assert error["type"] == "BackendNotRunning"
    assert "libervia-backend" in error["message"]


@pytest.mark.parametrize("argv", [
    [], ["backend"], ["backend", "nope"], ["--output", "xml", "backend", "status"],
    ["plugin", "list", "--state", "sleeping"], ["backend", "status", "--timeout", "-1"],
])
def test_usage_errors_exit_with_status_2(li_env, capsys, argv):
    assert run_li_sync(*argv)[0] == 2
    assert "error:" in capsys.readouterr().err


def test_missing_command_lists_the_choices(li_env, capsys):
    run_li_sync("backend")
    assert "a command is needed: status, version, info" in capsys.readouterr().err


def _leaf_commands(parser, path=()):
    for action in parser._actions:
        if hasattr(action, "_name_parser_map"):
            seen = set()
            for name, child in action.choices.items():
                if id(child) in seen:
                    continue  # alias
                seen.add(id(child))
                yield from _leaf_commands(child, (*path, name))
            return
    yield path


def test_every_command_explains_itself_with_help(li_env, capsys):
    commands = list(_leaf_commands(build_parser()))
    assert ("backend", "status") in commands and ("plugin", "list") in commands
    for command in [(), *commands]:
        assert run_li_sync(*command, "--help")[0] == 0
        help_text = capsys.readouterr().out
        assert f"usage: li {' '.join(command)}".rstrip() in help_text
        assert "--output" in help_text
        description = help_text.split("\n\n")[1]
        assert len(description) > 20, (command, help_text)


def test_li_imports_neither_twisted_nor_the_backend():
    code = (
        "import sys\n"
        "from libervia.cli.main import build_parser\n"
        "build_parser().parse_args(['backend', 'status'])\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('twisted', 'wokkel', 'sqlalchemy', 'zope', 'typing', 'pathlib')"
        " or m.startswith('libervia.backend')]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


@pytest_twisted.ensureDeferred
async def test_many_frontends_at_once_are_all_answered(backend):
    path = backend.getServiceNamed("bridge").path

    def status():
        with BridgeClient(path, timeout=30) as client:
            return client.call("backend_status")["status"]

    results = await defer.gatherResults(
        [threads.deferToThread(status) for __ in range(30)]
    )
    assert results == ["ready"] * 30


@pytest_twisted.ensureDeferred
async def test_backend_call_calls_any_method_with_json_params(run_li, backend):
    def greet(name: str) -> str:
        return f"hello {name}"

    backend.bridge.register_method("test.greet", greet)
    status, out, __ = await run_li("backend", "call", "test.greet", '{"name": "alice"}')
    assert (status, json.loads(out)) == (0, "hello alice")

    status, out, err = await run_li("backend", "call", "test.greet", '{"nom": "x"}')
    assert status == 1
    assert "[InvalidParams]" in err

    status, __, err = await run_li("backend", "call", "test.greet", "[1]")
    assert status == 1 and "JSON object" in err
