"""``li`` driving a backend started by twistd: status, plugins, clean stop."""

import os
import signal
import stat

import pytest

pytestmark = pytest.mark.e2e


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
