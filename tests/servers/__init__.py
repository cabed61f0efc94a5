"""Private, throwaway XMPP servers for the integration tests.

Each test session starts its own Prosody and ejabberd instances, in temporary folders, on
free ports of 127.0.0.1, with certificates from a private CA (:mod:`tests.servers.certs`);
the system instances (their configuration, data, node and ports) are never used. The
pytest fixtures live in :mod:`tests.servers.fixtures`; tests only see :class:`ServerInfo`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import socket
import ssl
import subprocess
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.servers.certs import Pki

NS_STREAM = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


class ServerError(RuntimeError):
    """A test server could not be started, stopped or driven."""


@dataclass(frozen=True)
class XmppUser:
    """An account registered on a test server."""

    localpart: str
    host: str
    password: str = field(repr=False)

    @property
    def jid(self) -> str:
        """The bare JID of the account."""
        return f"{self.localpart}@{self.host}"


@dataclass(frozen=True)
class ServerInfo:
    """What a test needs to know about a running private XMPP server.

    ``mechanisms`` are the SASL mechanisms the server offers after STARTTLS when the
    client lets TLS negotiate its highest version (1.3); ``mechanisms_tls12`` those it
    offers over TLS 1.2, where -PLUS (tls-unique) is possible on both servers.
    """

    kind: str
    host: str
    pubsub_service: str
    address: str
    c2s_port: int
    direct_tls_port: int | None
    ca_file: Path
    cert_file: Path
    wrong_name: str
    wrong_name_cert_file: Path
    wrong_name_key_file: Path
    signature_hash: str
    admin: XmppUser
    users: tuple[XmppUser, ...]
    mechanisms: frozenset[str]
    mechanisms_tls12: frozenset[str]
    options: dict = field(default_factory=dict, compare=False)
    _control: XmppServer | None = field(default=None, repr=False, compare=False)

    def user(self, index: int = 0) -> XmppUser:
        """The ``index``-th pre-registered user (not the admin)."""
        return self.users[index]

    @property
    def accounts(self) -> tuple[XmppUser, ...]:
        """Every pre-registered account, admin first."""
        return (self.admin, *self.users)

    def register(self, localpart: str, password: str) -> XmppUser:
        """Create an account on the server (it must be running)."""
        return self._control.register(localpart, password)

    def stop(self) -> None:
        """Stop the server, keeping its data and ports for :meth:`start`."""
        self._control.stop()

    def start(self) -> None:
        """Start the server again after :meth:`stop`; returns once it serves clients."""
        self._control.start()

    def restart(self) -> None:
        """Stop then start the server, keeping its data."""
        self._control.stop()
        self._control.start()

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._control.running

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log, for error messages."""
        return self._control.log_tail(lines)


# every server started by this process, so that an interrupted session cannot leave one
# behind (fixture finalizers stop them first; this is the last resort, see fixtures.py)
LIVE_SERVERS: weakref.WeakSet[XmppServer] = weakref.WeakSet()


class XmppServer:
    """Base class of the server controllers: process handling and readiness checks."""

    kind = ""
    #: system account the server runs as when the tests run as root
    system_user = ""

    def __init__(self, directory: Path, pki: Pki, host: str = "localhost",
                 pubsub_service: str | None = None, start_timeout: float = 30):
        self.directory = Path(directory)
        self.pki = pki
        self.host = host
        self.pubsub_service = pubsub_service or f"pubsub.{host}"
        self.address = "127.0.0.1"
        self.start_timeout = start_timeout
        self.c2s_port = free_port()
        self.direct_tls_port = free_port()
        self.log_file = self.directory / "server.log"
        self.output_file = self.directory / "output.log"

    # --- to implement -------------------------------------------------------------------

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def register(self, localpart: str, password: str) -> XmppUser:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------

    @property
    def run_as(self) -> str | None:
        """The account to switch to, or None when the tests do not run as root."""
        return self.system_user if os.geteuid() == 0 else None

    def own(self, path: Path) -> None:
        """Give ``path`` (created by this controller) to the server's account."""
        if self.run_as is None:
            return
        entry = pwd.getpwnam(self.run_as)
        os.chown(path, entry.pw_uid, entry.pw_gid)

    def own_tree(self) -> None:
        """Give the whole server folder to the server's account."""
        for root, dirs, files in os.walk(self.directory):
            self.own(Path(root))
            for name in dirs + files:
                self.own(Path(root) / name)

    def run(self, args: list[str], timeout: float = 60, env: dict | None = None
            ) -> subprocess.CompletedProcess:
        """Run a server tool as the server's account; raise with its output on failure."""
        try:
            result = subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, env=env,
                user=self.run_as, group=self._group(), extra_groups=self._extra_groups(),
                cwd=self.directory,
            )
        except subprocess.TimeoutExpired as e:
            raise ServerError(f"{' '.join(args)} did not end within {timeout}s") from e
        if result.returncode != 0:
            raise ServerError(
                f"{' '.join(args)} failed with status {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def _group(self) -> int | None:
        return None if self.run_as is None else pwd.getpwnam(self.run_as).pw_gid

    def _extra_groups(self) -> list[int] | None:
        return None if self.run_as is None else []

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server log and of its console output."""
        parts = []
        for path in (self.log_file, self.output_file):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(parts) or "(no log written)"

    def wait_ready(self, alive=None) -> None:
        """Poll the c2s port until the server answers a stream with STARTTLS offered.

        A listening port is not enough: the stream check proves the virtual host is
        loaded. ``alive`` is a callable telling whether the process is still there, so
        that a crash is reported at once instead of after the time-out.
        """
        deadline = time.monotonic() + self.start_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if alive is not None and not alive():
                raise ServerError(f"{self.kind} exited during start-up\n{self.log_tail()}")
            try:
                features = stream_features(self.address, self.c2s_port, self.host, timeout=2)
            except (OSError, ServerError) as e:
                last_error = e
                time.sleep(0.05)
                continue
            if "<starttls" in features:
                return
            last_error = ServerError(f"no STARTTLS in the stream features: {features}")
            time.sleep(0.05)
        raise ServerError(
            f"{self.kind} not ready on port {self.c2s_port} after {self.start_timeout}s "
            f"({last_error})\n{self.log_tail()}"
        )

    def info(self, admin: XmppUser, users: tuple[XmppUser, ...], mechanisms: frozenset,
             mechanisms_tls12: frozenset, options: dict) -> ServerInfo:
        return ServerInfo(
            kind=self.kind, host=self.host, pubsub_service=self.pubsub_service,
            address=self.address, c2s_port=self.c2s_port,
            direct_tls_port=self.direct_tls_port, ca_file=self.pki.ca_file,
            cert_file=self.pki.server.cert_file, wrong_name=self.pki.wrong_name.names[0],
            wrong_name_cert_file=self.pki.wrong_name.cert_file,
            wrong_name_key_file=self.pki.wrong_name.key_file,
            signature_hash=self.pki.hash_name, admin=admin, users=users,
            mechanisms=mechanisms, mechanisms_tls12=mechanisms_tls12, options=options,
            _control=self,
        )


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port free on ``address`` right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # the state follows the command name, which is in parentheses and may hold spaces
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def terminate_pid(pid: int, timeout: float = 15) -> None:
    """SIGTERM ``pid``, wait for it to go, SIGKILL as a last resort."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_until(lambda: not pid_alive(pid), timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 5)


def _open_stream(host: str) -> bytes:
    return (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        f"xmlns:stream='{NS_STREAM}' to='{host}' version='1.0'>"
    ).encode()


def _read_until(sock, marker: bytes, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while marker not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServerError(f"{marker!r} not received; got {data!r}")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            raise ServerError(f"connection closed before {marker!r}; got {data!r}")
        data += chunk
    return data.decode(errors="replace")


def stream_features(address: str, port: int, host: str, timeout: float = 5) -> str:
    """Open a client stream to ``host`` and return the raw ``<stream:features/>`` text."""
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(_open_stream(host))
        return _read_until(sock, b"</stream:features>", timeout)


def tls_context(ca_file: Path, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context that trusts only the test CA and checks host names."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if max_version is not None:
        context.maximum_version = max_version
    return context


def sasl_mechanisms(
    address: str, port: int, host: str, ca_file: Path,
    max_version: ssl.TLSVersion | None = None, direct_tls: bool = False,
    server_hostname: str | None = None, timeout: float = 5,
) -> tuple[frozenset[str], str]:
    """Negotiate TLS (STARTTLS or direct) and return the offered SASL mechanisms.

    Also returns the negotiated TLS version. The certificate is verified against
    ``ca_file`` for ``server_hostname`` (``host`` by default): a mismatch raises
    :class:`ssl.SSLCertVerificationError`.
    """
    context = tls_context(ca_file, max_version)
    with socket.create_connection((address, port), timeout=timeout) as raw:
        if not direct_tls:
            raw.sendall(_open_stream(host))
            features = _read_until(raw, b"</stream:features>", timeout)
            if "<starttls" not in features:
                raise ServerError(f"no STARTTLS offered: {features}")
            raw.sendall(f"<starttls xmlns='{NS_TLS}'/>".encode())
            answer = _read_until(raw, b"/>", timeout)
            if "<proceed" not in answer:
                raise ServerError(f"STARTTLS refused: {answer}")
        with context.wrap_socket(raw, server_hostname=server_hostname or host) as tls:
            tls.sendall(_open_stream(host))
            features = _read_until(tls, b"</stream:features>", timeout)
            version = tls.version()
    mechanisms = frozenset(re.findall(r"<mechanism>([^<]+)</mechanism>", features))
    return mechanisms, version
