"""A private Prosody instance for the integration tests.

It runs in the foreground as the ``prosody`` account (started as root, Prosody refuses to
keep root and misbehaves), with everything (configuration, data, log, pid file,
certificate) in its own folder, on loopback ports chosen at start-up.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

from tests.servers import (
    ServerError,
    XmppServer,
    XmppUser,
    free_port,
    pid_alive,
    terminate_pid,
)

#: SASL mechanisms offered after STARTTLS by each ``authentication`` setting, over TLS 1.3
#: (Prosody 0.12 only has tls-unique, so no -PLUS there) and over TLS 1.2.
MECHANISMS = {
    "internal_plain": (
        frozenset({"SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"}),
        frozenset({"SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS",
                   "SCRAM-SHA-256-PLUS", "PLAIN"}),
    ),
    "internal_hashed/SHA-1": (
        frozenset({"SCRAM-SHA-1", "PLAIN"}),
        frozenset({"SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "PLAIN"}),
    ),
    "internal_hashed/SHA-256": (
        frozenset({"SCRAM-SHA-256", "PLAIN"}),
        frozenset({"SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "PLAIN"}),
    ),
}

CONFIG = """\
-- private Prosody of the Libervia integration tests: nothing here is shared
pidfile = {pidfile}
data_path = {data_path}
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = {log_file} }} }}
interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
c2s_direct_tls_ports = {{ {direct_tls_port} }}
component_ports = {{ {component_port} }}
component_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
c2s_require_encryption = true
allow_registration = false
authentication = {authentication}
{password_hash}
admins = {{ {admin} }}
modules_enabled = {{
    "disco"; "roster"; "saslauth"; "tls"; "pep"; "ping"; "posix"; "private"; "carbons";
}}
modules_disabled = {{ "s2s"; "limits"; "http"; "bosh"; "websocket"; "admin_shell"; }}
pep_max_items = {max_items}
ssl = {{
    certificate = {cert_file};
    key = {key_file};
    {protocol}
}}
c2s_direct_tls_ssl = {{
    certificate = {cert_file};
    key = {key_file};
    {protocol}
}}

VirtualHost {host}

Component {pubsub_service} "pubsub"
    pubsub_max_items = {max_items}

-- an external component (XEP-0114) the tests may run, e.g. a pubsub service that lies
Component {component_jid}
    component_secret = {component_secret}
"""


def lua_string(value: str) -> str:
    """A Lua string literal for ``value``."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class ProsodyServer(XmppServer):
    """Controller of one private Prosody.

    :param authentication: ``internal_plain`` (every SCRAM variant Prosody has) or
        ``internal_hashed`` (only the ``password_hash`` variant)
    :param password_hash: ``SHA-1`` or ``SHA-256``, with ``internal_hashed``
    :param tls_protocol: LuaSec protocol, e.g. ``tlsv1_2`` to serve TLS 1.2 only
        (Prosody's default is ``tlsv1_2+``)
    :param max_items: per-node item cap of the pubsub component and of PEP
    """

    kind = "prosody"
    system_user = "prosody"

    def __init__(self, directory: Path, pki, admin: str = "admin", *,
                 authentication: str = "internal_plain", password_hash: str = "SHA-256",
                 tls_protocol: str | None = None, max_items: int = 100_000, **kwargs):
        super().__init__(directory, pki, **kwargs)
        if authentication not in ("internal_plain", "internal_hashed"):
            raise ValueError(f"unsupported Prosody authentication {authentication!r}")
        self.authentication = authentication
        self.password_hash = password_hash
        self.tls_protocol = tls_protocol
        self.max_items = max_items
        self.admin = admin
        #: an external component (XEP-0114) tests may connect (tests/hostile_pubsub.py)
        self.component_jid = f"component.{self.host}"
        self.component_port = free_port()
        self.component_secret = secrets.token_urlsafe(12)
        self.config_file = self.directory / "prosody.cfg.lua"
        self.pid_file = self.directory / "prosody.pid"
        self.process: subprocess.Popen | None = None
        self._write_config()

    @property
    def mechanisms_key(self) -> str:
        if self.authentication == "internal_plain":
            return "internal_plain"
        return f"internal_hashed/{self.password_hash}"

    def _write_config(self) -> None:
        certs = self.directory / "certs"
        certs.mkdir(exist_ok=True)
        # Prosody reads them as its own account: copies, not the CA folder's files
        cert_file = certs / "localhost.crt"
        key_file = certs / "localhost.key"
        shutil.copyfile(self.pki.server.cert_file, cert_file)
        shutil.copyfile(self.pki.server.key_file, key_file)
        key_file.chmod(0o600)
        data_path = self.directory / "data"
        data_path.mkdir(exist_ok=True)
        self.config_file.write_text(CONFIG.format(
            pidfile=lua_string(str(self.pid_file)),
            data_path=lua_string(str(data_path)),
            log_file=lua_string(str(self.log_file)),
            c2s_port=self.c2s_port,
            direct_tls_port=self.direct_tls_port,
            authentication=lua_string(self.authentication),
            password_hash=(
                f"password_hash = {lua_string(self.password_hash)}"
                if self.authentication == "internal_hashed" else ""
            ),
            admin=lua_string(f"{self.admin}@{self.host}"),
            max_items=self.max_items,
            cert_file=lua_string(str(cert_file)),
            key_file=lua_string(str(key_file)),
            protocol=(
                f"protocol = {lua_string(self.tls_protocol)};" if self.tls_protocol else ""
            ),
            host=lua_string(self.host),
            pubsub_service=lua_string(self.pubsub_service),
            component_port=self.component_port,
            component_jid=lua_string(self.component_jid),
            component_secret=lua_string(self.component_secret),
        ))
        self.own_tree()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start Prosody and return once it serves clients; raise :class:`ServerError`."""
        if self.running:
            return
        prosody = shutil.which("prosody")
        if prosody is None:
            raise ServerError("prosody is not installed (Debian package prosody)")
        self.output_file.parent.mkdir(exist_ok=True)
        with open(self.output_file, "ab") as output:
            # Popen switches account itself (like runuser), so that its pid is Prosody's
            self.process = subprocess.Popen(
                [prosody, "-F", "--config", str(self.config_file)],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                cwd=self.directory, user=self.run_as, group=self._group(),
                extra_groups=self._extra_groups(), start_new_session=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.directory),
                     "LANG": "C.UTF-8"},
            )
        try:
            self.wait_ready(alive=lambda: self.running)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 15) -> None:
        """Stop Prosody (SIGTERM, then SIGKILL after ``timeout``); its data is kept."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            terminate_pid(process.pid, timeout)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired as e:
            raise ServerError(f"prosody (pid {process.pid}) did not exit") from e
        if pid_alive(process.pid):
            raise ServerError(f"prosody (pid {process.pid}) is still running")

    def register(self, localpart: str, password: str) -> XmppUser:
        """Create an account with ``prosodyctl register``."""
        prosodyctl = shutil.which("prosodyctl")
        if prosodyctl is None:
            raise ServerError("prosodyctl is not installed (Debian package prosody)")
        self.run(
            [prosodyctl, "--config", str(self.config_file), "register",
             localpart, self.host, password],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.directory),
                 "LANG": "C.UTF-8"},
        )
        return XmppUser(localpart, self.host, password)
