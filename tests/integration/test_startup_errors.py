"""Start-up errors as users meet them, through both launchers: one line saying what to
do, exit status 1 (2 for a usage error), never a traceback (issue #15, point 6)."""

import os
import socket
import subprocess
import tempfile

import pytest

from tests.support import backend_env, venv_script, write_config

pytestmark = pytest.mark.parametrize("runner", ["twistd", "libervia-backend"])


@pytest.fixture
def start(tmp_path):
    """Start the backend with ``runner`` and settings added to a working
    configuration; return its exit status and output, checked free of tracebacks."""
    # UNIX socket paths are short: not under pytest's long temporary paths
    with tempfile.TemporaryDirectory(prefix="lb-start-") as short_dir:
        def run(runner, sections=None, env=None):
            config = tmp_path / "libervia.conf"
            write_config(config, {"DEFAULT": {"local_dir": tmp_path / "local"},
                                  "bridge": {"socket": f"{short_dir}/bridge.sock"},
                                  **(sections or {})})
            args = [venv_script(runner)]
            if runner == "twistd":
                args += ["--nodaemon", "--pidfile=", "libervia-backend"]
            result = subprocess.run(
                args + ["--config", str(config)], capture_output=True, text=True,
                env=env or backend_env(tmp_path), cwd=tmp_path, timeout=60)
            output = result.stdout + result.stderr
            assert "Traceback" not in output
            return result.returncode, output

        run.socket = f"{short_dir}/bridge.sock"
        yield run


def test_postgresql_without_the_extra_installed_says_what_to_install(
    runner, start, tmp_path
):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    # what a Python without the postgresql extra finds: no psycopg
    (hidden / "psycopg.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n")
    env = backend_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hidden),
                                                      env.get("PYTHONPATH")]))
    status, output = start(runner, {"storage": {
        "url": "postgresql+psycopg://libervia@localhost/libervia"}}, env=env)
    assert status == 1, output
    lines = [line for line in output.splitlines() if "critical" in line]
    assert len(lines) == 1, output
    assert lines[0].endswith(
        "backend can't start: the database of [storage] url is PostgreSQL, but its "
        "driver (psycopg) is not installed: install the backend's postgresql extra "
        "(pip install 'libervia-backend[postgresql]'), or leave [storage] url unset "
        "for SQLite")


@pytest.mark.parametrize(("sections", "message"), [
    ({"storage": {"url": "mysql://u@h/db"}}, "unsupported database 'mysql' in [storage] url"),
    ({"storage": {"url": "::::"}}, "invalid value for key 'url' of section [storage]"),
    ({"xmpp": {"step_timeout": "soon"}},
     "invalid value 'soon' for key 'step_timeout' of section [xmpp]"),
])
def test_a_bad_setting_is_a_usage_error_naming_it(runner, start, sections, message):
    status, output = start(runner, sections)
    assert status in (1, 2), output
    assert message in output


def test_a_busy_bridge_socket_names_the_other_backend(runner, start):
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(start.socket)
    other.listen()
    try:
        status, output = start(runner)
    finally:
        other.close()
    assert status == 1, output
    assert (f"another backend is already running with the bridge socket {start.socket}: "
            "stop it first, or give this one another [bridge] socket") in output


def test_a_socket_path_in_a_file_is_refused_with_the_setting_to_change(
    runner, start, tmp_path
):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    status, output = start(runner, {"bridge": {"socket": blocker / "bridge.sock"}})
    assert status == 1, output
    assert f"can't create the bridge socket folder {blocker}" in output
    assert "set [bridge] socket" in output
