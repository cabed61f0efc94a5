"""sd_notify messages: status lines, readiness, stopping, watchdog."""

import socket

import pytest
from twisted.internet import task

from libervia.backend.app.systemd import SystemdNotifier
from libervia.backend.core.triggers import TriggerManager


class Host:
    def __init__(self):
        self.trigger = TriggerManager()
        self.reactor = task.Clock()


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.setblocking(False)
    yield sock, str(path)
    sock.close()


def received(sock):
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_life_cycle_messages(listener):
    sock, path = listener
    host = Host()
    notifier = SystemdNotifier(host, env={"NOTIFY_SOCKET": path})
    assert notifier.enabled
    for status in ("starting", "ready", "stopping", "stopped"):
        host.trigger.point("backend_status", status)
    messages = received(sock)
    assert messages[0].startswith("STATUS=starting")
    assert messages[1].split("\n") == ["READY=1", "STATUS=ready"]
    assert messages[2].split("\n") == ["STOPPING=1", "STATUS=stopping"]
    assert messages[3] == "STATUS=stopped"


def test_watchdog_pings_at_half_the_interval_while_ready(listener):
    sock, path = listener
    host = Host()
    notifier = SystemdNotifier(host, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})
    assert notifier.watchdog_interval == 5
    host.trigger.point("backend_status", "ready")
    host.reactor.advance(5)
    host.reactor.advance(5)
    pings = [m for m in received(sock) if m == "WATCHDOG=1"]
    assert len(pings) == 3  # at once, then every 5 s
    host.trigger.point("backend_status", "stopping")
    host.reactor.advance(30)
    assert "WATCHDOG=1" not in received(sock)[1:]


def test_watchdog_for_another_process_is_ignored(listener):
    __, path = listener
    notifier = SystemdNotifier(Host(), env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000",
                                            "WATCHDOG_PID": "1"})
    assert notifier.watchdog_interval is None


def test_abstract_socket_address():
    notifier = SystemdNotifier(Host(), env={"NOTIFY_SOCKET": "@libervia-test"})
    assert notifier.address == b"\0libervia-test"


def test_nothing_happens_outside_systemd():
    host = Host()
    notifier = SystemdNotifier(host, env={})
    assert not notifier.enabled
    assert not host.trigger.has_point("backend_status")
    notifier.notify("READY=1")  # no socket: nothing to do, no error


def test_unreachable_socket_only_warns(tmp_path):
    host = Host()
    notifier = SystemdNotifier(host, env={"NOTIFY_SOCKET": str(tmp_path / "missing")})
    host.trigger.point("backend_status", "ready")  # must not raise
    assert notifier.enabled
