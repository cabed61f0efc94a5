"""``li`` driving a backend started by twistd: status, plugins, clean stop."""

import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support import BackendProcess

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parent.parent.parent


def test_li_reads_status_and_plugins_then_backend_stops_cleanly(
    backend_process, li, e2e_dir
):
    socket_path = e2e_dir / "run" / "bridge.sock"
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(socket_path.parent).st_mode) == 0o700

    status = li.json("backend", "status")
    assert status["status"] == "ready"
    assert status["ready"] is True

    version = li.json("backend", "version")
    assert version["backend"] == status["version"]
    assert version["protocol"].startswith("1.")

    result = li("plugin", "list")
    assert result.returncode == 0, result.stderr
    assert any(line.split()[:2] == ["XEP-0059", "loaded"]
               for line in result.stdout.splitlines())

    exit_status = backend_process.stop(signal.SIGTERM)
    output = backend_process.output
    assert exit_status in (0, -signal.SIGTERM), output
    assert "backend stopped" in output
    assert "Traceback" not in output
    assert not socket_path.exists()

    after = li("backend", "status")
    assert after.returncode == 1
    assert "not running" in after.stderr and "libervia-backend" in after.stderr


def test_garbage_on_the_socket_does_not_disturb_the_backend(backend_process, li, e2e_dir):
    import socket

    path = str(e2e_dir / "run" / "bridge.sock")
    hostile = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hostile.settimeout(30)
    hostile.connect(path)
    hostile.sendall(b"\xff\x00garbage\n" + b"[" * 50_000 + b"\n")
    reader = hostile.makefile("rb")
    first, second = reader.readline(), reader.readline()
    assert b'"code":-32700' in first and b'"code":-32700' in second
    # one byte over the default limit: the backend reads it all, answers, then closes
    hostile.sendall(b"x" * (1024 * 1024 + 1))
    rest = reader.read()
    assert b'"FrameTooLarge"' in rest
    hostile.close()

    assert li.json("backend", "status")["ready"] is True


def test_quick_start_run_backend_says_how_to_use_li_and_it_works_as_printed(
    e2e_config, e2e_env
):
    """The README's Quick start, to "li backend status": tools/run-backend in one
    terminal, and in another the commands it prints once the backend is ready."""
    process = BackendProcess([str(ROOT / "tools" / "run-backend"), "--config",
                              str(e2e_config)], env=e2e_env, cwd=ROOT)
    try:
        process.wait_for("backend ready", timeout=120)
        process.wait_for("Ctrl-C here stops the backend", timeout=30)
        output = process.output
        hint = output[output.index("The backend is ready."):].splitlines()
        commands = [line.strip() for line in hint if line.startswith("    ")]
        assert commands == [
            f"tools/li --config {e2e_config} backend status",
            ". .venv/bin/activate",
            f"li --config {e2e_config} backend status",
        ]
        # each way, typed as printed in a shell started in the clone
        for script in (commands[0], f"{commands[1]} && {commands[2]}"):
            shell = {**e2e_env, "PATH": os.defpath}  # li is not on the PATH before
            result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=shell,
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            fields = dict(line.split(":", 1) for line in result.stdout.splitlines())
            assert fields["status"].strip() == "ready", result.stdout
            assert fields["ready"].strip() == "yes"
        # Ctrl-C in the first terminal (twistd exits by the signal it stopped on)
        assert process.stop(signal.SIGINT) in (0, -signal.SIGINT), process.output
        assert "backend stopped" in process.output
        assert "Traceback" not in process.output
        assert "editable" not in process.output.lower()
    finally:
        process.stop()
