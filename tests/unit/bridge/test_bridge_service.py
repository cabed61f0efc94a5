"""The bridge socket: where it is, who may use it, and what happens to an old one."""

import os
import socket
import stat

import pytest
import pytest_twisted
from twisted.internet import reactor

from libervia.backend.app.main import Backend
from libervia.backend.bridge.server import BridgeService, socket_path
from libervia.backend.core.config import Config
from libervia.backend.core.exceptions import ConfigError, StartupError
from libervia.cli.bridge_client import find_socket


def make_backend(tmp_path, socket_file):
    config = Config.from_dict(
        {"DEFAULT": {"local_dir": tmp_path / "local"}, "bridge": {"socket": socket_file}},
        env={},
    )
    return Backend(config, reactor=reactor, plugin_entry_points=[])


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def short_tmp(tmp_path):
    # UNIX socket paths are limited to ~100 bytes; pytest's tmp paths can be longer
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lb-") as folder:
        yield type(tmp_path)(folder)


@pytest_twisted.ensureDeferred
async def test_socket_is_private_and_answers_then_is_removed_on_stop(short_tmp):
    path = short_tmp / "run" / "bridge.sock"
    backend = make_backend(short_tmp, path)
    bridge_service = BridgeService(backend)
    bridge_service.startService()
    try:
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert mode(path) == 0o600
        assert mode(path.parent) == 0o700
        assert backend.bridge.factory is not None
    finally:
        await bridge_service.stopService()
    assert not path.exists()
    assert backend.bridge.factory is None


@pytest_twisted.ensureDeferred
async def test_existing_folder_of_ours_is_made_private(short_tmp):
    folder = short_tmp / "shared"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    bridge_service = BridgeService(make_backend(short_tmp, folder / "bridge.sock"))
    bridge_service.startService()
    try:
        assert mode(folder) == 0o700
    finally:
        await bridge_service.stopService()


@pytest_twisted.ensureDeferred
async def test_stale_socket_of_a_dead_backend_is_replaced(short_tmp):
    path = short_tmp / "bridge.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a killed backend leaves
    assert path.exists()
    bridge_service = BridgeService(make_backend(short_tmp, path))
    bridge_service.startService()
    try:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))  # the new backend listens
        probe.close()
    finally:
        await bridge_service.stopService()


def test_live_socket_of_another_backend_is_a_clear_startup_error(short_tmp):
    path = short_tmp / "bridge.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen(1)
    try:
        bridge_service = BridgeService(make_backend(short_tmp, path))
        with pytest.raises(StartupError, match="another backend is already running"):
            bridge_service.startService()
        assert path.exists()  # the other backend's socket is left alone
        assert not bridge_service.running
    finally:
        live.close()


@pytest_twisted.ensureDeferred
async def test_second_backend_on_the_same_socket_fails_to_start(short_tmp):
    path = short_tmp / "bridge.sock"
    first = BridgeService(make_backend(short_tmp, path))
    first.startService()
    try:
        with pytest.raises(StartupError, match="another backend"):
            BridgeService(make_backend(short_tmp, path)).startService()
    finally:
        await first.stopService()


def test_a_file_that_is_not_a_socket_is_never_removed(short_tmp):
    path = short_tmp / "bridge.sock"
    path.write_text("important")
    with pytest.raises(StartupError, match="not a socket"):
        BridgeService(make_backend(short_tmp, path)).startService()
    assert path.read_text() == "important"


def test_invalid_limits_are_refused_with_the_key_named(short_tmp):
    with pytest.raises(ConfigError, match="max_frame_size.*positive integer"):
        Config.from_dict({"bridge": {"max_frame_size": "0"}}, env={})
    with pytest.raises(ConfigError, match="max_clients"):
        Config.from_dict({"bridge": {"max_clients": "many"}}, env={})


@pytest.mark.parametrize("with_runtime", [True, False])
def test_default_socket_path_is_the_same_for_backend_and_li(tmp_path, with_runtime):
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    env = {"XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "no-config")}
    if with_runtime:
        env["XDG_RUNTIME_DIR"] = str(runtime)
    backend_path = socket_path(Config.from_dict({}, env=env))
    assert find_socket(env=env) == str(backend_path)
    expected = (runtime / "libervia" if with_runtime else tmp_path / "data" / "libervia")
    assert backend_path == expected / "bridge.sock"


def test_configured_socket_and_local_dir_are_read_alike_by_backend_and_li(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "no-config")}
    conf = tmp_path / "libervia.conf"
    conf.write_text(f"[DEFAULT]\nlocal_dir = {tmp_path}/local\n")
    expected = tmp_path / "local" / "bridge.sock"
    assert socket_path(Config.load(conf, env=env, default_paths=[])) == expected
    assert find_socket(env=env, config_path=str(conf)) == str(expected)

    conf.write_text("[bridge]\nsocket = ~/sockets/b.sock\n")
    expected = os.path.expanduser("~/sockets/b.sock")
    assert str(socket_path(Config.load(conf, env=env, default_paths=[]))) == expected
    assert find_socket(env=env, config_path=str(conf)) == expected


@pytest_twisted.ensureDeferred
async def test_frontend_not_reading_a_real_socket_is_dropped_and_others_keep_working(
    short_tmp,
):
    from twisted.internet import task, threads

    from libervia.cli.bridge_client import BridgeClient

    path = short_tmp / "bridge.sock"
    config = Config.from_dict(
        {"DEFAULT": {"local_dir": short_tmp / "local"},
         "bridge": {"socket": path, "max_buffer": 65536}},
        env={},
    )
    backend = Backend(config, reactor=reactor, plugin_entry_points=[])
    backend.bridge.register_signal("flood", "")
    bridge_service = BridgeService(backend)
    bridge_service.startService()
    factory = backend.bridge.factory
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(str(path))
        stuck.sendall(b'{"jsonrpc":"2.0","method":"subscribe","id":1}\n')
        # reactor turns, not sleeps: until the backend has read the subscription
        for __ in range(10_000):
            if any(c.subscriptions == "*" for c in factory.connections):
                break
            await task.deferLater(reactor, 0, lambda: None)
        (connection,) = factory.connections
        sent = 0
        # far more than every buffer on the way (kernel, transport, queue) can hold
        while connection in factory.connections and sent < 2000:
            backend.bridge.emit_signal("flood", payload="x" * 10_000)
            sent += 1
            await task.deferLater(reactor, 0, lambda: None)
        assert connection not in factory.connections, "the stuck frontend was kept"
        assert sent < 2000

        def status():
            with BridgeClient(path, timeout=30) as client:
                return client.call("backend_status")

        assert (await threads.deferToThread(status))["version"] == backend.version
    finally:
        stuck.close()
        await bridge_service.stopService()
