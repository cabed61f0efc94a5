"""systemd integration: the unit files verify, and readiness reaches NOTIFY_SOCKET."""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import BackendProcess, unavailable, venv_script

MISC = Path(__file__).parent.parent.parent / "misc"
UNITS = {
    "system": (MISC / "libervia-backend.service", "/opt/libervia/bin/twistd"),
    "user": (MISC / "user" / "libervia-backend.service",
             "%h/.local/share/libervia/venv/bin/twistd"),
}


@pytest.mark.parametrize("kind", sorted(UNITS))
def test_unit_file_passes_systemd_analyze_verify(kind, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        unavailable("systemd-analyze is missing (Debian package systemd)")
    source, twistd_path = UNITS[kind]
    text = source.read_text()
    assert twistd_path in text
    # the unit names where the backend is installed on a real system: point it at the
    # twistd of this environment, which verify requires to exist
    unit = tmp_path / "libervia-backend.service"
    unit.write_text(text.replace(twistd_path, venv_script("twistd")))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), SYSTEMD_LOG_LEVEL="notice")
    args = [analyze] + (["--user"] if kind == "user" else []) + ["verify", str(unit)]
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    # verify only warns about unknown keys or bad values: any output is a defect
    assert output == ""
    assert "Type=notify" in text and "--nodaemon" in text


def test_hardening_directives_are_present():
    text = UNITS["system"][0].read_text()
    for directive in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                      "PrivateTmp=yes", "StateDirectory=libervia",
                      "RuntimeDirectory=libervia", "WatchdogSec="):
        assert directive in text


def _read_messages(sock: socket.socket, until: str, timeout: float) -> list[str]:
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            messages.append(sock.recv(65536).decode())
        except TimeoutError:
            continue
        if any(until in m.split("\n") for m in messages):
            return messages
    raise AssertionError(f"{until} not received within {timeout}s; got {messages}")


def test_twistd_notifies_ready_then_stopping(tmp_path):
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    config = tmp_path / "libervia.conf"
    config.write_text(f"[DEFAULT]\nlocal_dir = {tmp_path / 'local'}\n"
                      f"[bridge]\nsocket = {tmp_path / 'bridge.sock'}\n")
    env = dict(os.environ, NOTIFY_SOCKET=str(notify_path), WATCHDOG_USEC="2000000",
               WATCHDOG_PID="", XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    env.pop("LIBERVIA_CONFIG", None)
    backend = BackendProcess(
        [venv_script("twistd"), "--nodaemon", "--pidfile=", "libervia-backend",
         "--config", str(config)], env=env, cwd=tmp_path)
    try:
        before_ready = _read_messages(sock, "READY=1", timeout=90)
        # the bridge answers once READY=1 has been sent
        assert (tmp_path / "bridge.sock").exists()
        watchdog = _read_messages(sock, "WATCHDOG=1", timeout=10)
        backend.process.send_signal(signal.SIGTERM)
        after = _read_messages(sock, "STOPPING=1", timeout=30)
    finally:
        status = backend.stop()
        sock.close()
    assert status in (0, -signal.SIGTERM), backend.output
    statuses = [m for m in before_ready if m.startswith("STATUS=")]
    assert statuses and statuses[0].startswith("STATUS=starting")
    assert "READY=1" in before_ready[-1].split("\n")
    assert "WATCHDOG=1" in watchdog
    assert "STOPPING=1" in after[-1].split("\n")
    # nothing says READY again after STOPPING
    assert not any("READY=1" in m for m in after)
