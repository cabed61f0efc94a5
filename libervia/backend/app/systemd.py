"""Readiness and liveness notifications to systemd (``Type=notify`` services).

Only the datagram protocol of ``sd_notify(3)`` is needed, so it is written here rather
than pulled from a library: when ``$NOTIFY_SOCKET`` is set, the backend sends

* ``STATUS=...`` lines while it starts and stops (what ``systemctl status`` shows),
* ``READY=1`` once storage, plugins, bridge and profiles are up,
* ``STOPPING=1`` when it begins to stop,
* ``WATCHDOG=1`` every half ``WatchdogSec`` when the unit sets one: a reactor stuck
  for longer makes systemd restart the service.

Without ``$NOTIFY_SOCKET`` (not run by systemd), nothing is sent.
"""

import os
import socket
from collections.abc import Mapping

from twisted.internet import task

from libervia.backend.core.interfaces import Host
from libervia.backend.core.log import getLogger
from libervia.backend.core.trigger_names import BACKEND_STATUS

log = getLogger(__name__)

_STATUS_TEXT = {
    "starting": "starting: opening the database, loading plugins",
    "ready": "ready",
    "stopping": "stopping",
    "stopped": "stopped",
    "failed": "start-up failed (see the log)",
}


class SystemdNotifier:
    """Send ``sd_notify`` messages for a backend; a no-op outside systemd.

    :param host: the backend (its ``backend_status`` trigger drives the messages)
    :param env: environment (default ``os.environ``)
    """

    def __init__(self, host: Host, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.host = host
        self.address = self._address(env.get("NOTIFY_SOCKET"))
        self.watchdog_interval = self._watchdog_interval(env)
        self._watchdog: task.LoopingCall | None = None
        self._socket: socket.socket | None = None
        if self.address is not None:
            host.trigger.add(BACKEND_STATUS, self._on_status)

    @staticmethod
    def _address(value: str | None) -> str | bytes | None:
        if not value:
            return None
        if value.startswith("@"):  # abstract namespace socket
            return b"\0" + value[1:].encode()
        if value.startswith("/"):
            return value
        log.warn("ignoring NOTIFY_SOCKET {value!r}: not a UNIX socket path", value=value)
        return None

    @staticmethod
    def _watchdog_interval(env: Mapping[str, str]) -> float | None:
        usec = env.get("WATCHDOG_USEC")
        if not usec:
            return None
        pid = env.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            return None  # meant for another process
        try:
            return int(usec) / 1_000_000 / 2
        except ValueError:
            return None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> None:
        """Send one message made of ``lines`` (``KEY=value``)."""
        if self.address is None:
            return
        message = "\n".join(lines).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto(message, self.address)
        except OSError as e:
            log.warn("can't notify systemd: {error}", error=e)

    def _on_status(self, status: str) -> bool:
        text = _STATUS_TEXT.get(status, status)
        if status == "ready":
            self.notify("READY=1", f"STATUS={text}")
            self._start_watchdog()
        elif status == "stopping":
            self._stop_watchdog()
            self.notify("STOPPING=1", f"STATUS={text}")
        else:
            self.notify(f"STATUS={text}")
        return True

    def _start_watchdog(self) -> None:
        if self.watchdog_interval is None or self._watchdog is not None:
            return
        self._watchdog = task.LoopingCall(self.notify, "WATCHDOG=1")
        self._watchdog.clock = self.host.reactor
        self._watchdog.start(self.watchdog_interval, now=True)

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._watchdog = None
