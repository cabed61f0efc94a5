"""ClientManager without network: shared attempts, failures kept, keys of old passwords."""

import time
import types

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet import error as net_error
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from libervia.backend.bridge.server import Bridge
from libervia.backend.core.config import Config
from libervia.backend.core.interfaces import (
    ProfileConnected,
    ProfileConnecting,
    ProfileDisconnected,
    ProfileDisconnecting,
)
from libervia.backend.core.triggers import TriggerManager
from libervia.backend.memory.storage import Storage
from libervia.backend.xmpp.client import ConnectionFailed, ConnectionState
from libervia.backend.xmpp.clients import KEY_CACHE_KEY, SASL_NAMESPACE, ClientManager
from libervia.backend.xmpp.profiles import ConnectionOptions, ProfileManager


@pytest.fixture
def host(tmp_path):
    local_dir = tmp_path / "local"
    storage = Storage(f"sqlite:///{local_dir / 'libervia.db'}")
    pytest_twisted.blockon(storage.start())
    pytest_twisted.blockon(storage.migrate())
    host = types.SimpleNamespace(
        config=Config.from_dict({"DEFAULT": {"local_dir": str(local_dir)}}),
        storage=storage,
        # connections go to a memory reactor: nothing leaves the process
        reactor=MemoryReactorClock(),
        trigger=TriggerManager(),
        plugins={},
        plugin_manager=types.SimpleNamespace(records={}),
    )
    host.bridge = Bridge(host)
    host.profiles = ProfileManager(host)
    host.profiles.load_key()
    host.clients = ClientManager(host)
    pytest_twisted.blockon(defer.ensureDeferred(host.profiles.create(
        "alice", "alice@example.org", "secret password",
        ConnectionOptions(host="127.0.0.1", port=5299),
    )))
    yield host
    pytest_twisted.blockon(storage.stop())


async def connection_opened(host, count=1):
    """Wait (the storage runs in threads) until ``count`` connections were opened."""
    deadline = time.monotonic() + 10
    while len(host.reactor.tcpClients) < count:
        assert time.monotonic() < deadline, "no connection opened"
        await task.deferLater(reactor, 0.01, lambda: None)
    return host.reactor.tcpClients[-1][2]  # the factory


def connect(host):
    return defer.ensureDeferred(host.clients.connect("alice")).addTimeout(10, reactor)


def stream_ready(client):
    """What the stream manager does once the stream is authenticated and bound."""
    client._authd(types.SimpleNamespace(addObserver=lambda *a, **k: None,
                                        send=lambda o: None, transport=None))


@pytest_twisted.ensureDeferred
async def test_connects_made_while_connecting_share_one_client(host):
    first = connect(host)
    second = connect(host)
    factory = await connection_opened(host)
    stream_ready(factory.client)
    assert await first is await second is factory.client
    assert len(host.reactor.tcpClients) == 1
    assert host.clients.is_connected("alice")


@pytest_twisted.ensureDeferred
async def test_a_failed_attempt_is_reported_until_the_next_success(host):
    attempt = connect(host)
    waiting = connect(host)
    factory = await connection_opened(host)
    factory.clientConnectionFailed(
        None, Failure(net_error.ConnectionRefusedError("refused")))
    for d in (attempt, waiting):
        with pytest.raises(ConnectionFailed):
            await d
    info = host.clients.info("alice")
    assert info["state"] == ConnectionState.FAILED.value
    assert "127.0.0.1:5299" in info["error"]
    assert "alice" not in host.clients.clients

    attempt = connect(host)
    stream_ready((await connection_opened(host, 2)).client)
    await attempt
    assert host.clients.info("alice")["state"] == ConnectionState.CONNECTED.value
    assert host.clients.info("alice")["error"] is None


@pytest_twisted.ensureDeferred
async def test_changing_the_password_drops_the_stored_scram_keys(host):
    await host.storage.profiles.set_private_value(SASL_NAMESPACE, KEY_CACHE_KEY, b"sealed keys",
                                                  binary=True, profile="alice")
    await host.clients.password_changed("alice")
    stored = await host.storage.profiles.get_privates(SASL_NAMESPACE, [KEY_CACHE_KEY],
                                                      binary=True, profile="alice")
    assert stored == {}


class HookedPlugin:
    """A plugin implementing the profile hooks, recording the calls."""

    def __init__(self, calls):
        self.calls = calls

    def profile_connecting(self, client):
        self.calls.append(("connecting", client.profile.name))

    async def profile_connected(self, client):
        self.calls.append(("connected", client.profile.name))

    def profile_disconnecting(self, client):
        # called while the stream is up: the last stanzas go out before it closes
        self.calls.append(("disconnecting", client.profile.name, client.is_connected))

    def profile_disconnected(self, client):
        self.calls.append(("disconnected", client.profile.name))
        return defer.succeed(None)


@pytest_twisted.ensureDeferred
async def test_plugins_implementing_the_hook_protocols_are_called_the_others_not(host):
    calls = []
    hooked = HookedPlugin(calls)
    assert all(isinstance(hooked, hook) for hook in (
        ProfileConnecting, ProfileConnected, ProfileDisconnecting, ProfileDisconnected))
    host.plugins.update({"HOOKED": hooked, "PLAIN": object()})
    attempt = connect(host)
    stream_ready((await connection_opened(host)).client)
    await attempt
    await host.clients.disconnect("alice")
    assert calls == [("connecting", "alice"), ("connected", "alice"),
                     ("disconnecting", "alice", True), ("disconnected", "alice")]


@pytest_twisted.ensureDeferred
async def test_connection_states_reach_the_bridge_signal(host):
    states = []
    host.bridge.emit_signal = lambda name, **data: states.append((name, data["state"]))
    attempt = connect(host)
    stream_ready((await connection_opened(host)).client)
    await attempt
    assert states == [("connection_state", "connecting"), ("connection_state", "connected")]
    assert "connection_state" in host.bridge.signals
