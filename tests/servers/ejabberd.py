"""A private ejabberd node for the integration tests.

``ejabberdctl`` is run as the ``ejabberd`` account with a configuration folder of the
node's own, so the system node, its cookie and its spool are never touched:

- the node name is unique per instance, so several test sessions can run at once;
- Erlang distribution listens on a fixed loopback port (``ERL_DIST_PORT``): no epmd is
  started or needed, and nothing stays behind once the node has stopped;
- the cookie is a random one given with ``-setcookie``, and ``HOME`` is the node's folder,
  so ``~ejabberd/.erlang.cookie`` is neither read nor created.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.servers import (
    ServerError,
    XmppServer,
    XmppUser,
    free_port,
    pid_alive,
    terminate_pid,
    wait_until,
)

EJABBERDCTL = "/usr/sbin/ejabberdctl"

_ALL_SCRAM = ("SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512")

#: SASL mechanisms offered after STARTTLS for each password format, over TLS 1.3 and 1.2
#: (ejabberd 23.01 offers -PLUS with tls-unique even over TLS 1.3).
MECHANISMS = {
    "plain": frozenset({"PLAIN", *_ALL_SCRAM, *(m + "-PLUS" for m in _ALL_SCRAM)}),
    "scram/sha": frozenset({"PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"}),
    "scram/sha256": frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"}),
    "scram/sha512": frozenset({"PLAIN", "SCRAM-SHA-512", "SCRAM-SHA-512-PLUS"}),
}

CONFIG = """\
# private ejabberd of the Libervia integration tests: nothing here is shared
hosts:
  - {host}
loglevel: info
log_rotate_count: 0
certfiles:
  - {certfile}
ca_file: {ca_file}
c2s_protocol_options: {protocol_options}
auth_method: internal
auth_password_format: {password_format}
{scram_hash}
disable_sasl_mechanisms:
  - X-OAUTH2
  - DIGEST-MD5
# tests publish quickly: no shaping, deep queues
max_fsm_queue: 1000000
listen:
  -
    port: {c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 16777216
    shaper: none
    access: c2s
    starttls_required: true
    protocol_options: {protocol_options}
  -
    port: {direct_tls_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 16777216
    shaper: none
    access: c2s
    tls: true
    protocol_options: {protocol_options}
# no federation: the tests stay on this host
s2s_access: s2s
acl:
  admin:
    user:
      - {admin}
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  configure:
    allow: admin
  s2s:
    deny: all
  pubsub_createnode:
    allow: local
api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"
shaper_rules:
  max_user_sessions: 100
  max_user_offline_messages: 100000
  c2s_shaper: none
modules:
  mod_caps: {{}}
  mod_carboncopy: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_private: {{}}
  mod_pubsub:
    hosts:
      - {pubsub_service}
    access_createnode: pubsub_createnode
    max_items_node: {max_items}
    max_nodes_discoitems: 10000
    plugins:
      - flat
      - pep
"""


class EjabberdServer(XmppServer):
    """Controller of one private ejabberd node.

    :param password_format: ``plain`` (every SCRAM variant and -PLUS) or ``scram`` (only
        the ``scram_hash`` variant)
    :param scram_hash: ``sha``, ``sha256`` or ``sha512``, with ``scram``
    :param tls12_only: refuse TLS 1.3 (``no_tlsv1_3``)
    :param max_items: per-node item cap of the pubsub service
    """

    kind = "ejabberd"
    system_user = "ejabberd"

    def __init__(self, directory: Path, pki, admin: str = "admin", *,
                 password_format: str = "plain", scram_hash: str = "sha256",
                 tls12_only: bool = False, max_items: int = 100_000, **kwargs):
        super().__init__(directory, pki, **kwargs)
        if password_format not in ("plain", "scram"):
            raise ValueError(f"unsupported ejabberd password format {password_format!r}")
        self.password_format = password_format
        self.scram_hash = scram_hash
        self.tls12_only = tls12_only
        self.max_items = max_items
        self.admin = admin
        self.node = f"libervia-test-{secrets.token_hex(4)}@localhost"
        self.dist_port = free_port()
        self.cookie = secrets.token_hex(16)
        self.config_dir = self.directory / "config"
        self.spool_dir = self.directory / "spool"
        self.logs_dir = self.directory / "logs"
        self.config_file = self.config_dir / "ejabberd.yml"
        self.pid_file = self.directory / "ejabberd.pid"
        self.log_file = self.logs_dir / "ejabberd.log"
        self.pid: int | None = None
        self._write_config()

    @property
    def mechanisms_key(self) -> str:
        if self.password_format == "plain":
            return "plain"
        return f"scram/{self.scram_hash}"

    def _write_config(self) -> None:
        for folder in (self.config_dir, self.spool_dir, self.logs_dir):
            folder.mkdir(exist_ok=True)
        # one PEM holding the chain and the key, as ejabberd likes it
        certfile = self.config_dir / "server.pem"
        certfile.write_bytes(
            self.pki.server.cert_file.read_bytes() + self.pki.server.key_file.read_bytes()
        )
        certfile.chmod(0o600)
        ca_file = self.config_dir / "ca.pem"
        shutil.copyfile(self.pki.ca_file, ca_file)
        protocol_options = ["no_sslv3", "no_tlsv1", "no_tlsv1_1"]
        if self.tls12_only:
            protocol_options.append("no_tlsv1_3")
        self.config_file.write_text(CONFIG.format(
            host=self.host,
            certfile=f'"{certfile}"',
            ca_file=f'"{ca_file}"',
            protocol_options="[" + ", ".join(f'"{o}"' for o in protocol_options) + "]",
            password_format=self.password_format,
            scram_hash=(
                f"auth_scram_hash: {self.scram_hash}" if self.password_format == "scram"
                else ""
            ),
            c2s_port=self.c2s_port,
            direct_tls_port=self.direct_tls_port,
            admin=f'"{self.admin}@{self.host}"',
            pubsub_service=self.pubsub_service,
            max_items=self.max_items,
        ))
        (self.config_dir / "inetrc").write_text("")
        # read by ejabberdctl for every command, the server's start included
        (self.config_dir / "ejabberdctl.cfg").write_text(
            f"ERL_DIST_PORT={self.dist_port}\n"
            f'ERL_OPTIONS="-setcookie {self.cookie} '
            '-kernel inet_dist_use_interface {127,0,0,1}"\n'
            f"EJABBERD_PID_PATH={self.pid_file}\n"
        )
        self.own_tree()

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``ejabberdctl`` on this node; raise :class:`ServerError` on failure."""
        return self.run(self._ctl_args(*args), timeout=timeout, env=self._env())

    def _ctl_args(self, *args: str) -> list[str]:
        return [
            EJABBERDCTL, "--node", self.node, "--config-dir", str(self.config_dir),
            "--config", str(self.config_file), "--spool", str(self.spool_dir),
            "--logs", str(self.logs_dir), *args,
        ]

    def _env(self) -> dict:
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.directory),
                "LANG": "C.UTF-8"}

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def running(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)

    def start(self) -> None:
        """Start the node and return once it serves clients; raise :class:`ServerError`."""
        if self.running:
            return
        if not Path(EJABBERDCTL).exists():
            raise ServerError("ejabberdctl is not installed (Debian package ejabberd)")
        self.pid_file.unlink(missing_ok=True)
        try:
            with open(self.directory / "output.log", "ab") as output:
                result = subprocess.run(
                    self._ctl_args("start"), stdin=subprocess.DEVNULL, stdout=output,
                    stderr=subprocess.STDOUT, env=self._env(), cwd=self.directory,
                    user=self.run_as, group=self._group(),
                    extra_groups=self._extra_groups(), timeout=60,
                )
            if result.returncode != 0:
                raise ServerError(f"ejabberdctl start failed with status "
                                  f"{result.returncode}\n{self.log_tail()}")
            # the beam writes its pid early in its start; a crash before it is caught
            # by the readiness time-out, with the log in the message
            self.wait_ready(alive=self._alive_during_start)
            self.pid = self._read_pid()
            # the port answers once the listeners are up; ``status`` confirms that the
            # ejabberd application has finished starting. ``ejabberdctl started`` would do
            # the same but always sleeps 2 s before its first check.
            if not wait_until(self._status_ok, self.start_timeout, interval=0.2):
                raise ServerError(f"ejabberd node {self.node} never reported started\n"
                                  f"{self.log_tail()}")
        except BaseException:
            # also on KeyboardInterrupt: a half-started beam must not survive the tests
            self.stop()
            raise

    def _alive_during_start(self) -> bool:
        pid = self._read_pid()
        return pid is None or pid_alive(pid)

    def _status_ok(self) -> bool:
        try:
            self.ctl("status", timeout=30)
        except ServerError:
            return False
        return True

    def stop(self, timeout: float = 20) -> None:
        """Stop the node, make sure its beam process is gone; its data is kept."""
        pid, self.pid = self.pid, None
        if pid is not None and pid_alive(pid):
            # the Erlang VM answers SIGTERM with init:stop(), the clean shutdown that
            # ``ejabberdctl stop`` asks for too, without starting a VM of its own for
            # it (about 1 s instead of 2.4 s); SIGKILL after ``timeout``
            terminate_pid(pid, timeout)
        # whatever still runs under this node's unique name (a beam interrupted in its
        # start, before its pid was known; a stuck ejabberdctl) goes too
        for leftover in self._node_pids():
            terminate_pid(leftover, timeout=5)
        if pid is not None and pid_alive(pid):
            raise ServerError(f"ejabberd beam (pid {pid}) is still running")

    def _node_pids(self) -> list[int]:
        """Processes with this node's name as an argument (the beam, ejabberdctl)."""
        node = self.node.encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if node in args and pid_alive(int(entry.name)):
                pids.append(int(entry.name))
        return pids

    def register(self, localpart: str, password: str) -> XmppUser:
        """Create an account with ``ejabberdctl register``."""
        self.ctl("register", localpart, self.host, password)
        return XmppUser(localpart, self.host, password)

    def register_many(self, accounts: list[tuple[str, str]]) -> list[XmppUser]:
        """Register several accounts at once: each ``ejabberdctl`` starts an Erlang VM."""
        with ThreadPoolExecutor(max_workers=len(accounts) or 1) as pool:
            return list(pool.map(lambda a: self.register(*a), accounts))


def ejabberd_available() -> bool:
    """Whether ejabberd is installed here."""
    return Path(EJABBERDCTL).exists() and shutil.which("erl") is not None
