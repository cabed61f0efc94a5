"""Pytest fixtures giving the integration tests private XMPP servers.

Import them explicitly in a conftest.py (``pytest_plugins`` is only allowed at the root)::

    from tests.servers.fixtures import prosody_server, ejabberd_server, xmpp_server  # noqa

- ``prosody_server`` / ``ejabberd_server``: the default instance of each, started once
  per test session, with pre-registered accounts (``info.admin``, ``info.users``);
- ``xmpp_server``: parametrised over both;
- ``xmpp_server_factory``: ``factory(kind, **options)`` for a variant (TLS 1.2 only,
  hashed passwords, another certificate signature hash...), also started once per
  session for each distinct set of options.

A server that is not installed or does not start makes its tests skip locally and fail
under ``CI=true`` (:func:`tests.support.unavailable`), with the server's log in the reason.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import pytest

from tests.servers import LIVE_SERVERS, ServerError, ServerInfo, XmppServer, XmppUser
from tests.servers.certs import Pki, create_pki
from tests.servers.ejabberd import MECHANISMS as EJABBERD_MECHANISMS
from tests.servers.ejabberd import EjabberdServer, ejabberd_available
from tests.servers.prosody import MECHANISMS as PROSODY_MECHANISMS
from tests.servers.prosody import ProsodyServer
from tests.support import unavailable

#: accounts created on every server: the first one is the admin
ACCOUNTS = ("admin", "alice", "bob", "carol")

#: set to keep the servers' folders (configuration, logs, data) after the session
KEEP_ENV = "LIBERVIA_TEST_KEEP_SERVERS"


def _stop_leftovers() -> None:
    # last resort when the session ends without its finalizers (internal error...)
    for server in list(LIVE_SERVERS):
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - nothing left to report to at exit
            pass


atexit.register(_stop_leftovers)


class ServerPool:
    """Starts servers on demand, once per set of options, and stops them all at the end."""

    def __init__(self):
        self._pkis: dict[str, Pki] = {}
        self._servers: dict[tuple, ServerInfo | ServerError] = {}
        self._directories: list[Path] = []
        # every controller made, started or not: close() stops them all
        self._controls: list[XmppServer] = []

    def pki(self, hash_name: str = "sha256") -> Pki:
        """The session's CA and certificates, for a signature hash."""
        if hash_name not in self._pkis:
            directory = self._mkdtemp(f"pki-{hash_name}")
            self._pkis[hash_name] = create_pki(directory, hash_name=hash_name)
        return self._pkis[hash_name]

    def _mkdtemp(self, label: str) -> Path:
        directory = Path(tempfile.mkdtemp(prefix=f"libervia-test-{label}-"))
        self._directories.append(directory)
        return directory

    def get(self, kind: str, signature_hash: str = "sha256", **options) -> ServerInfo:
        """A running server of ``kind`` (``prosody`` or ``ejabberd``) with ``options``.

        The options are those of :class:`~tests.servers.prosody.ProsodyServer` or
        :class:`~tests.servers.ejabberd.EjabberdServer`. Raise :class:`ServerError` when
        it cannot start (the failure is remembered: it is not retried in the session).
        """
        key = (kind, signature_hash, tuple(sorted(options.items())))
        known = self._servers.get(key)
        if isinstance(known, ServerError):
            raise known
        if known is not None:
            return known
        try:
            info = self._start(kind, signature_hash, options)
        except ServerError as e:
            self._servers[key] = e
            raise
        self._servers[key] = info
        return info

    def _start(self, kind: str, signature_hash: str, options: dict) -> ServerInfo:
        if kind == "prosody":
            if shutil.which("prosody") is None or shutil.which("prosodyctl") is None:
                raise ServerError("Prosody is not installed (Debian package prosody)")
            cls, mechanisms = ProsodyServer, PROSODY_MECHANISMS
        elif kind == "ejabberd":
            if not ejabberd_available():
                raise ServerError("ejabberd is not installed (Debian package ejabberd)")
            cls, mechanisms = EjabberdServer, EJABBERD_MECHANISMS
        else:
            raise ValueError(f"unknown XMPP server kind {kind!r}")
        if os.geteuid() != 0 and kind == "ejabberd":
            raise ServerError("ejabberdctl only runs as root or as ejabberd")
        pki = self.pki(signature_hash)
        directory = self._mkdtemp(kind)
        server: XmppServer = cls(directory, pki, admin=ACCOUNTS[0], **options)
        LIVE_SERVERS.add(server)
        self._controls.append(server)
        server.start()
        accounts = [(name, secrets.token_urlsafe(12)) for name in ACCOUNTS]
        if isinstance(server, EjabberdServer):
            registered = server.register_many(accounts)
        else:
            registered = [server.register(*account) for account in accounts]
        offered = mechanisms[server.mechanisms_key]
        if isinstance(offered, frozenset):
            offered = (offered, offered)
        return server.info(
            admin=registered[0], users=tuple(registered[1:]), mechanisms=offered[0],
            mechanisms_tls12=offered[1], options={"signature_hash": signature_hash, **options},
        )

    def close(self) -> None:
        """Stop every server, then remove the folders (unless asked to keep them)."""
        errors = []
        for server in self._controls:
            try:
                server.stop()
            except ServerError as e:
                errors.append(str(e))
        if not os.environ.get(KEEP_ENV):
            for directory in self._directories:
                shutil.rmtree(directory, ignore_errors=True)
        if errors:
            raise ServerError("\n".join(errors))


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def xmpp_server_pool():
    """The session's :class:`ServerPool`; everything it started is stopped at the end.

    While it lives, SIGTERM (``timeout pytest ...``, a CI time-out) is turned into a
    KeyboardInterrupt, so that pytest still runs the finalizers that stop the servers
    (they run in their own sessions, out of reach of signals sent to the test's group).
    """
    previous = None
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
        previous = signal.signal(signal.SIGTERM, _interrupt)
    pool = ServerPool()
    try:
        yield pool
    finally:
        try:
            pool.close()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _get(pool: ServerPool, kind: str, **options) -> ServerInfo:
    try:
        info = pool.get(kind, **options)
    except ServerError as e:
        unavailable(f"{kind} test server unavailable: {e}")
    if not info.running:
        # a test stopped it (restart tests) and failed before starting it again
        info.start()
    return info


@pytest.fixture(scope="session")
def xmpp_server_factory(xmpp_server_pool):
    """``factory(kind, signature_hash="sha256", **options) -> ServerInfo``."""

    def factory(kind: str, **options) -> ServerInfo:
        return _get(xmpp_server_pool, kind, **options)

    return factory


@pytest.fixture(scope="session")
def prosody_server(xmpp_server_pool) -> ServerInfo:
    """The session's default Prosody (``internal_plain``: SCRAM-SHA-1/256 and -PLUS)."""
    return _get(xmpp_server_pool, "prosody")


@pytest.fixture(scope="session")
def ejabberd_server(xmpp_server_pool) -> ServerInfo:
    """The session's default ejabberd (plain passwords: SCRAM-SHA-1/256/512 and -PLUS)."""
    return _get(xmpp_server_pool, "ejabberd")


@pytest.fixture(scope="session", params=["prosody", "ejabberd"])
def xmpp_server(request, xmpp_server_pool) -> ServerInfo:
    """Each default server in turn."""
    return _get(xmpp_server_pool, request.param)


__all__ = [
    "ACCOUNTS",
    "ServerPool",
    "XmppUser",
    "ejabberd_server",
    "prosody_server",
    "xmpp_server",
    "xmpp_server_factory",
    "xmpp_server_pool",
]
