"""Security checks of a real backend through a full scenario, against the private Prosody.

A backend with the pubsub cache plugins starts on a fresh local folder (SQLite), a
profile is created and logs in with SCRAM, another client publishes on a node the
profile then reads and syncs, new items arrive by events, the profile disconnects and
the backend stops.

* What the backend created is not readable by other users: the bridge socket and the
  database files (with WAL sidecars) and ``secrets.key`` are 0600, their folders 0700.
* Nothing secret appears in any log event at any level: every event of the run is
  captured at debug level and both its formatted text and its raw fields are scanned
  for the password, the secrets key (raw, base64 and hex), and what SCRAM sent and
  received (ClientProof, ServerSignature, base64 messages).
* A server sending a DTD (before TLS here) is refused with a clear error, nothing
  is expanded, and the backend serves on.
* TLS verification is on by default: a profile without the private CA is refused
  with a certificate error (``test_xmpp_connection`` covers wrong names too).
"""

from __future__ import annotations

import base64
import importlib.metadata
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.logger import LogLevel

from libervia.backend.app.main import Backend
from libervia.backend.core.config import Config
from libervia.backend.core.constants import C
from libervia.backend.xmpp.client import (
    CertificateError,
    RestrictedXMLError,
)
from libervia.backend.xmpp.profiles import ConnectionOptions
from libervia.backend.xmpp.sasl import initializer
from tests.integration import test_xmpp_connection as xmpp_tests
from tests.pubsub_support import (
    PLUGINS,
    TIMEOUT,
    Publisher,
    Reader,
    new_node,
    until,
)

pytestmark = pytest.mark.integration


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


#: debug logs, and the SASL messages sent recorded as secrets; the test fails at its end
#: if any of them was logged
secret_watch = xmpp_tests.secret_watch


@pytest.fixture
def watch(secret_watch, monkeypatch):
    """Also what the server sent in SCRAM: its ServerSignature, base64 messages."""
    original_data = initializer._element_data

    def element_data(element, what):
        data = original_data(element, what)
        secret_watch.secrets.add(base64.b64encode(data).decode())
        for part in data.decode("utf-8", "replace").split(","):
            if part.startswith("v="):
                secret_watch.server_signatures.append(part[2:])
                secret_watch.secrets.add(part[2:])
        return data

    secret_watch.server_signatures = []
    monkeypatch.setattr(initializer, "_element_data", element_data)
    return secret_watch


@pytest.fixture
def folders(tmp_path):
    sockets = Path(tempfile.mkdtemp(prefix="li-"))  # a UNIX socket path is short
    yield tmp_path / "local", sockets / "run"
    shutil.rmtree(sockets, ignore_errors=True)


async def start_backend(local: Path, run: Path) -> Backend:
    """A started backend with the pubsub cache plugins, on SQLite in ``local``."""
    config = Config.from_dict({
        "DEFAULT": {"local_dir": local},
        "bridge": {"socket": run / "bridge.sock"},
        "plugin PUBSUB_CACHE": {"page_size": 10},
    })
    entry_points = [ep for ep in importlib.metadata.entry_points(
        group=C.PLUGINS_ENTRY_POINT_GROUP) if ep.name in PLUGINS]
    backend = Backend(config, reactor=reactor, plugin_entry_points=entry_points)
    await backend.startService()
    return backend


@pytest_twisted.ensureDeferred
async def test_full_scenario_keeps_files_private_and_logs_free_of_secrets(
        prosody_server, watch, folders):
    local, run = folders
    backend = await start_backend(local, run)
    try:
        # files and folders of a real start
        db = local / "libervia.db"
        assert (mode(local), mode(run)) == (0o700, 0o700)
        assert stat.S_ISSOCK((run / "bridge.sock").lstat().st_mode)
        assert mode(run / "bridge.sock") == 0o600
        assert mode(db) == 0o600
        key_file = local / "secrets.key"
        assert mode(key_file) == 0o600
        key = key_file.read_bytes()
        watch.secrets.update({base64.b64encode(key).decode(), key.hex(), repr(key)})

        # profile, SCRAM login, publish, sync, events
        user = prosody_server.user(0)
        watch.secrets.add(user.password)
        await backend.profiles.create("secure", user.jid, user.password,
                                      ConnectionOptions(host=prosody_server.address,
                                                        port=prosody_server.c2s_port,
                                                        ca_file=str(prosody_server.ca_file)))
        node = new_node()
        publisher = Publisher(prosody_server)
        await publisher.create(node, [f"p{n}" for n in range(15)])
        reader = await Reader.connect(backend, prosody_server, node, name="secure")
        assert reader.client.sasl.mechanism.startswith("SCRAM-")
        assert len((await reader.get()).items) == 15
        await reader.wait_synchronised()
        await publisher.publish(node, [("late", None)])
        await until(reader.mirrors_service, "the published item in the cache")
        assert watch.proofs and watch.server_signatures  # SCRAM really ran
        for sidecar in (Path(f"{db}-wal"), Path(f"{db}-shm")):
            # they exist while the database is open (WAL mode)
            assert sidecar.exists() and mode(sidecar) == 0o600, sidecar

        # TLS verification is on by default: without the private CA, refused
        other = prosody_server.user(1)
        await backend.profiles.create("no_ca", other.jid, other.password,
                                      ConnectionOptions(host=prosody_server.address,
                                                        port=prosody_server.c2s_port))
        with pytest.raises(CertificateError, match="certificate verify failed"):
            await defer.ensureDeferred(backend.clients.connect("no_ca")).addTimeout(
                TIMEOUT, reactor)
        assert len((await reader.get()).items) == 16  # still served

        await defer.ensureDeferred(backend.clients.disconnect("secure")).addTimeout(
            TIMEOUT, reactor)
    finally:
        await backend.stopService()

    assert any(e.get("log_level") is LogLevel.debug for e in watch.events)
    leaks = watch.leaks()
    assert not leaks, "secrets in the logs:\n" + "\n".join(leaks)


class DTDServer(protocol.Protocol):
    """Answers the client's stream header with a DTD declaring an entity."""

    def __init__(self, received: list[bytes]) -> None:
        self.received = received

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        self.received.append(data)
        if len(self.received) > 1:
            return
        self.transport.write(
            b"<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY x 'EXPANDED'>]>"
            b"<stream:stream xmlns='jabber:client' xmlns:stream="
            b"'http://etherx.jabber.org/streams' from='localhost' id='x' version='1.0'>"
            b"<message from='localhost'><body>&x;</body></message>")


@pytest_twisted.ensureDeferred
async def test_server_sending_a_dtd_is_refused_and_the_backend_serves_on(
        prosody_server, watch, folders):
    received: list[bytes] = []
    port = reactor.listenTCP(0, protocol.Factory.forProtocol(lambda: DTDServer(received)),
                             interface="127.0.0.1")
    backend = await start_backend(*folders)
    try:
        user = prosody_server.user(0)
        await backend.profiles.create("hostile", user.jid, user.password,
                                      ConnectionOptions(host="127.0.0.1",
                                                        port=port.getHost().port))
        with pytest.raises(RestrictedXMLError, match="document type declaration"):
            await defer.ensureDeferred(backend.clients.connect("hostile")).addTimeout(
                TIMEOUT, reactor)
        # the client said why, and closed its stream
        await until(lambda: defer.succeed(b"</stream:stream>" in b"".join(received)),
                    "the client's stream closed")
        assert b"restricted-xml" in b"".join(received)
        assert not [e for e in watch.events if "EXPANDED" in repr(e)]
        # the backend keeps serving: another profile connects to the real server
        await backend.profiles.create("fine", user.jid, user.password, ConnectionOptions(
            host=prosody_server.address, port=prosody_server.c2s_port,
            ca_file=str(prosody_server.ca_file)))
        client = await defer.ensureDeferred(backend.clients.connect("fine")).addTimeout(
            TIMEOUT, reactor)
        assert client.is_connected
    finally:
        await backend.stopService()
        await port.stopListening()
