"""A small synchronous client of the backend's bridge, standard library only.

It is what ``li`` uses, and scripts may use it as well::

    from libervia.cli.bridge_client import BridgeClient, find_socket

    with BridgeClient(find_socket()) as bridge:
        print(bridge.call("backend_status")["status"])

The wire protocol (JSON-RPC 2.0, one compact JSON document per line, on a UNIX socket)
is described in ``doc/bridge-protocol.rst``.  This module must stay importable without
Twisted nor the backend: ``li`` starts in a few milliseconds because of it.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
from collections import deque

from libervia import paths

# typing and pathlib cost li several milliseconds at each start: they are only needed
# by type checkers (libervia.paths imports configparser only when reading a file)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any

#: major version of the protocol this client speaks (see ``bridge_info``)
PROTOCOL_MAJOR = 1

START_HINT = (
    "start it with `tools/run-backend` from a clone of the repository, "
    "`libervia-backend` or `twistd -n --pidfile= libervia-backend` where it is installed "
    "(all three in the foreground), or `systemctl --user start libervia-backend` if it is "
    "installed as a systemd service (misc/user/libervia-backend.service)"
)


class ClientError(Exception):
    """Base of the errors of the client; the message is meant for a person."""


class BackendNotRunning(ClientError):
    """Nothing listens on the socket: the backend is not running (or not yet ready)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(
            f"the backend is not running, or not ready yet ({reason}: {path}); "
            f"{START_HINT}"
        )


class ProtocolError(ClientError):
    """The backend sent something this client does not understand, or hung up."""


class BridgeError(ClientError):
    """An error answered by the backend.

    :ivar code: JSON-RPC error code
    :ivar type: name of the backend's exception class (``NotFound``...)
    :ivar message: what went wrong, for a person
    :ivar data: the error's ``data`` member
    """

    def __init__(self, code: int, type: str, message: str, data: dict[str, Any]) -> None:
        self.code = code
        self.type = type
        self.message = message
        self.data = data
        super().__init__(message)

    @classmethod
    def from_error(cls, error: Any) -> BridgeError:
        if not isinstance(error, dict):
            return cls(-32603, "InternalError", f"malformed error: {error!r}", {})
        data = error.get("data")
        data = data if isinstance(data, dict) else {}
        return cls(
            code=error.get("code", -32603),
            type=str(data.get("type") or "Error"),
            message=str(error.get("message") or "unknown error"),
            data=data,
        )

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "type": self.type, "message": self.message}


# finding the socket: the backend's rule, from libervia.paths


def find_socket(
    explicit: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    config_path: str | None = None,
) -> str:
    """Path of the bridge socket.

    In order: ``explicit`` (``li --socket``), the ``LIBERVIA_BRIDGE_SOCKET`` environment
    variable, ``[bridge] socket`` in the backend's configuration files (the same files,
    ``config_path`` or ``LIBERVIA_CONFIG`` being read last), else
    ``$XDG_RUNTIME_DIR/libervia/bridge.sock`` when the runtime folder exists, else
    ``{local_dir}/bridge.sock``: :func:`libervia.paths.frontend_socket`.

    :raise ClientError: a configuration file can't be read, or a path is not one
    """
    try:
        return paths.frontend_socket(explicit, config_path, env)
    except paths.ConfigFileError as e:
        raise ClientError(f"can't read the configuration: {e}") from None
    except paths.PathError as e:
        raise ClientError(str(e)) from None


class BridgeClient:
    """A connection to the backend; calls are synchronous.

    :param path: the socket (see :func:`find_socket`)
    :param timeout: seconds to wait for an answer (``None``: no limit)
    :param on_signal: called with (name, params) for each signal met while waiting for
        an answer; without it, signals are kept for :meth:`signals`
    """

    def __init__(
        self,
        path: str | os.PathLike,
        timeout: float | None = 60.0,
        on_signal: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        self.on_signal = on_signal
        self._sock: socket.socket | None = None
        self._reader: Any = None
        self._ids = itertools.count(1)
        self._pending_signals: deque[tuple[str, dict[str, Any]]] = deque()

    def __enter__(self) -> BridgeClient:
        self.connect()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def connect(self) -> None:
        """Connect now (calls connect on first use otherwise).

        :raise BackendNotRunning: no backend listens on the socket
        :raise ClientError: the socket can't be used (permissions...)
        """
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            sock.close()
            reason = "no socket" if isinstance(e, FileNotFoundError) else "nobody answers"
            # the socket appears once the backend is ready: it may be starting up
            raise BackendNotRunning(self.path, reason) from None
        except PermissionError:
            sock.close()
            raise ClientError(
                f"permission denied on the bridge socket {self.path}: the backend runs "
                "as another user; run li as that user"
            ) from None
        except OSError as e:
            sock.close()
            raise ClientError(f"can't connect to the bridge socket {self.path}: {e}") from None
        self._sock = sock
        self._reader = sock.makefile("rb")

    def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, message: dict[str, Any]) -> None:
        self.connect()
        assert self._sock is not None
        data = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        try:
            self._sock.sendall(data.encode("utf-8") + b"\n")
        except OSError as e:
            self.close()
            raise ProtocolError(f"the backend closed the connection: {e}") from None

    def _receive(self) -> dict[str, Any]:
        try:
            line = self._reader.readline()
        except TimeoutError:
            self.close()
            raise ClientError(
                f"the backend did not answer within {self.timeout} s "
                "(--timeout sets the limit)"
            ) from None
        except OSError as e:
            self.close()
            raise ProtocolError(f"connection to the backend lost: {e}") from None
        if not line:
            self.close()
            raise ProtocolError("the backend closed the connection (is it stopping?)")
        try:
            message = json.loads(line)
        except ValueError:
            self.close()
            raise ProtocolError("the backend sent a message that is not JSON") from None
        if not isinstance(message, dict):
            self.close()
            raise ProtocolError("the backend sent a message that is not a JSON object")
        return message

    def _dispatch_signal(self, message: dict[str, Any]) -> None:
        params = message.get("params")
        signal = (str(message["method"]), params if isinstance(params, dict) else {})
        if self.on_signal is not None:
            self.on_signal(*signal)
        else:
            self._pending_signals.append(signal)

    def call(self, method: str, **params: Any) -> Any:
        """Call ``method`` with ``params`` (by name) and return its result.

        :raise BridgeError: the backend answered an error
        :raise ClientError: not connected, time-out, protocol error
        """
        request_id = next(self._ids)
        self._send({"jsonrpc": "2.0", "method": method, "params": params, "id": request_id})
        while True:
            message = self._receive()
            if "method" in message and "id" not in message:
                self._dispatch_signal(message)
                continue
            if message.get("id") == request_id:
                if "error" in message:
                    raise BridgeError.from_error(message["error"])
                return message.get("result")
            if message.get("id") is None and "error" in message:
                # an error the backend could not tie to a request (frame too large...)
                raise BridgeError.from_error(message["error"])
            # an answer to another request: this client sends one at a time, ignore it

    def subscribe(self, signals: list[str] | None = None) -> Any:
        """Receive ``signals`` (all of them when ``None``)."""
        if signals is None:
            return self.call("subscribe")
        return self.call("subscribe", signals=signals)

    def wait_forever(self) -> None:
        """Wait for messages without time-out from now on (for a command following
        signals until it is stopped)."""
        self.timeout = None
        if self._sock is not None:
            self._sock.settimeout(None)

    def signals(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield (name, params) for each signal, as they come, until disconnected.

        :raise ProtocolError: the backend closed the connection (it is stopping)
        :raise ClientError: nothing came within the time-out (see :meth:`wait_forever`)
        """
        while True:
            while self._pending_signals:
                yield self._pending_signals.popleft()
            message = self._receive()
            if "method" in message and "id" not in message:
                params = message.get("params")
                yield str(message["method"]), params if isinstance(params, dict) else {}
