"""Fixtures of the li tests: a real backend listening on a socket in a temporary folder.

``li`` is synchronous: the tests run it in a thread while the reactor serves the
bridge in the main thread.
"""

import importlib.metadata
import io
import tempfile
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from libervia.backend.app.main import Backend
from libervia.backend.core.config import Config
from libervia.backend.core.constants import C
from libervia.cli.main import main


@pytest.fixture
def li_env(monkeypatch, tmp_path):
    """Keep the user's configuration and sockets out of the tests."""
    for name in ("LIBERVIA_BRIDGE_SOCKET", "LIBERVIA_CONFIG", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


@pytest.fixture
def socket_dir():
    # UNIX socket paths are limited to ~100 bytes; pytest's tmp paths can be longer
    with tempfile.TemporaryDirectory(prefix="li-") as folder:
        yield Path(folder)


def started_backend(socket_dir, tmp_path, plugins):
    """Start a Backend with only ``plugins`` (import names); yield it, then stop it."""
    config = Config.from_dict(
        {"DEFAULT": {"local_dir": tmp_path / "local"},
         "bridge": {"socket": socket_dir / "bridge.sock"}},
    )
    entry_points = [
        ep for ep in importlib.metadata.entry_points(group=C.PLUGINS_ENTRY_POINT_GROUP)
        if ep.name in plugins
    ]
    backend = Backend(config, reactor=reactor, plugin_entry_points=entry_points)
    pytest_twisted.blockon(backend.startService())
    yield backend
    pytest_twisted.blockon(backend.stopService())


@pytest.fixture
def backend(li_env, socket_dir, tmp_path):
    """A started Backend (storage, XEP-0059 plugin, bridge) on the real reactor."""
    yield from started_backend(socket_dir, tmp_path, ("XEP-0059",))


@pytest.fixture
def pubsub_backend(li_env, socket_dir, tmp_path):
    """A started Backend with the presence, roster, messages, pubsub and cache plugins
    (no XMPP server)."""
    yield from started_backend(socket_dir, tmp_path, ("PRESENCE", "ROSTER", "MESSAGES",
                                                      "XEP-0030", "XEP-0059", "XEP-0060",
                                                      "XEP-0092", "PUBSUB_CACHE"))


def run_li_sync(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def assert_usage_error(argv, capsys) -> None:
    """``li ARGV`` is refused with status 2 and an error line, before any call."""
    status, out, err = run_li_sync(*argv, "--socket", "/nonexistent/bridge.sock")
    captured = capsys.readouterr()
    assert status == 2, err + captured.err
    assert out + captured.out == ""
    assert "error:" in err + captured.err


def li_runner(backend):
    """A function running li against ``backend``, giving a Deferred of
    (status, stdout, stderr)."""
    socket_path = str(backend.getServiceNamed("bridge").path)

    def run(*argv: str):
        return threads.deferToThread(run_li_sync, "--socket", socket_path, *argv)

    return run


@pytest.fixture
def run_li(backend):
    """Run li against the backend; returns a Deferred of (status, stdout, stderr)."""
    return li_runner(backend)


@pytest.fixture
def run_li_pubsub(pubsub_backend):
    """Run li against the backend with the pubsub plugins."""
    return li_runner(pubsub_backend)
