"""``li profile connect`` to a server that accepts the connection and then says nothing.

The "server" is a loopback TCP listener of the test; the backend (twistd) is given
``[xmpp] step_timeout = 2``.  ``li`` must say which step the server did not answer in,
and where, well before its own deadline, and the profile must not stay "connecting".
"""

import json
import socket
import threading
import time

import pytest

pytestmark = pytest.mark.e2e

STEP_TIMEOUT = 2
STREAM_HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                 b"xmlns:stream='http://etherx.jabber.org/streams' from='localhost' "
                 b"id='silent-1' version='1.0'>")


class SilentServer:
    """Accepts TCP connections on loopback, sends ``greeting`` (maybe nothing), then
    keeps every connection open without a word."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, __ = self.listener.accept()
            except OSError:
                return  # closed
            self.connections.append(connection)
            if self.greeting:
                connection.sendall(self.greeting)

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def e2e_config(e2e_config):
    with e2e_config.open("a") as f:
        f.write(f"[xmpp]\nstep_timeout = {STEP_TIMEOUT}\n")
    return e2e_config


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def header_then_silent_server():
    server = SilentServer(STREAM_HEADER)
    yield server
    server.close()


def create(li, name, port):
    result = li("profile", "create", name, "--jid", f"{name}@localhost", "--host",
                "127.0.0.1", "--port", str(port), input="password\n")
    assert result.returncode == 0, result.stderr


def test_li_names_the_silent_server_and_the_step_and_the_profile_is_not_stuck(
    backend_process, li, silent_server, header_then_silent_server
):
    for name, server, step in (
        ("mute", silent_server, "the stream header"),
        ("halfway", header_then_silent_server, "the stream features"),
    ):
        create(li, name, server.port)
        start = time.monotonic()
        connect = li("profile", "connect", name)
        elapsed = time.monotonic() - start
        assert connect.returncode == 1, connect.stdout
        assert connect.stderr.startswith(
            f"li: error: the server 127.0.0.1:{server.port} did not answer during {step} "
            f"within {STEP_TIMEOUT} s"), connect.stderr
        assert connect.stderr.rstrip().endswith("[ConnectionTimeout]")
        assert "the backend did not answer" not in connect.stderr
        assert STEP_TIMEOUT <= elapsed < 30, elapsed

        # the profile says what happened, and stays usable
        connection = li.json("profile", "info", name)["connection"]
        assert connection["state"] == "failed"
        assert f"did not answer during {step}" in connection["error"]
        states = {p["name"]: p["state"] for p in li.json("profile", "list")}
        assert states[name] == "failed"
        not_connected = li("pubsub", "get", "-p", name, "-n", "news", "--output", "json")
        assert not_connected.returncode == 1
        error = json.loads(not_connected.stdout)["error"]
        assert error["type"] == "NotConnected"
        assert f"did not answer during {step}" in error["message"]

    # a new attempt is a new attempt: it fails the same way, not "connecting" for ever
    again = li("profile", "connect", "mute", "--output", "json")
    assert again.returncode == 1
    assert json.loads(again.stdout)["error"]["type"] == "ConnectionTimeout"
    assert li.json("profile", "info", "mute")["connection"]["state"] == "failed"

    # li's own deadline is another message: the backend did not answer in time
    impatient = li("profile", "connect", "mute", "--timeout", "0.5")
    assert impatient.returncode == 1
    assert "the backend did not answer within 0.5 s" in impatient.stderr
    # the attempt li gave up on still ends, in the backend, with the server's error
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        connection = li.json("profile", "info", "mute")["connection"]
        if connection["state"] != "connecting":
            break
        time.sleep(0.1)
    assert connection["state"] == "failed", connection
    assert "Traceback" not in backend_process.output
