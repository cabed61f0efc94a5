"""The bridge registry (``host.bridge``) and the service listening on its socket.

:class:`Bridge` exists from the creation of the backend, so that plugins register
their methods and signals in their ``__init__``; :class:`BridgeService` starts listening
once the plugins are loaded, so a frontend never sees a half-loaded backend.
"""

import errno
import inspect
import os
import re
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from twisted.application import service
from twisted.internet import defer, error
from twisted.internet.interfaces import IListeningPort

from libervia import paths
from libervia.backend.bridge import PROTOCOL_NAME, PROTOCOL_VERSION, errors
from libervia.backend.bridge.params import Parameters, UncheckableSignature, parameters_of
from libervia.backend.bridge.protocol import (
    ALL_SIGNALS,
    DEFAULT_MAX_BUFFER,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_MAX_FRAME_SIZE,
    BridgeFactory,
    BridgeProtocol,
    encode,
)
from libervia.backend.core.async_utils import maybe_async_call
from libervia.backend.core.config import Config, declare, parse_int
from libervia.backend.core.exceptions import ConflictError, StartupError
from libervia.backend.core.interfaces import Host
from libervia.backend.core.log import getLogger
from libervia.backend.core.plugins import PluginManager
from libervia.backend.core.trigger_names import BACKEND_STATUS

log = getLogger(__name__)


class BridgeHost(Host, Protocol):
    """The host, with its plugin loader (the ``plugin_list`` method reports it)."""

    #: the plugin loader (what was loaded, from where, and what failed)
    plugin_manager: PluginManager


def _parse_positive_int(value: str) -> int:
    number = parse_int(value)
    if number < 1:
        raise ValueError("expected a positive integer")
    return number


declare(
    "bridge", "max_frame_size", _parse_positive_int, DEFAULT_MAX_FRAME_SIZE,
    "Longest message (in bytes) a frontend may send; a longer one gets an error and "
    "the connection is closed.",
)
declare(
    "bridge", "max_buffer", _parse_positive_int, DEFAULT_MAX_BUFFER,
    "Bytes the backend keeps for a frontend that does not read what it is sent; "
    "beyond, the frontend is disconnected.",
)
declare(
    "bridge", "max_clients", _parse_positive_int, DEFAULT_MAX_CLIENTS,
    "Frontend connections served at the same time.",
)

#: the parameter naming a profile: a call naming one that does not exist fails with
#: ProfileNotFound before the method runs
PROFILE_PARAMETER = "profile"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


def socket_path(config: Config) -> Path:
    """Where the bridge listens: ``[bridge] socket``, else the default.

    The default is ``$XDG_RUNTIME_DIR/libervia/bridge.sock`` when there is a runtime
    folder, else ``{local_dir}/bridge.sock``.  The rule is
    :func:`libervia.paths.bridge_socket`, which ``li`` applies too.
    """
    return Path(paths.bridge_socket(config.get("bridge", "socket"), config.local_dir,
                                    config.env))


@dataclass
class Method:
    """A method callable through the bridge."""

    name: str
    func: Callable[..., Any]
    doc: str
    with_connection: bool
    #: the parameters frontends pass, read from the type hints of ``func``
    parameters: Parameters

    def bind(self, params: dict[str, Any], connection: BridgeProtocol | None) -> Any:
        """Check ``params`` against the declared parameters; the keyword arguments.

        :raise errors.InvalidParams: unknown, missing or wrongly typed parameter
        """
        self.parameters.check(params)
        kwargs = dict(params)
        if self.with_connection:
            kwargs["connection"] = connection
        return kwargs


@dataclass
class Signal:
    """A signal frontends may subscribe to."""

    name: str
    doc: str


def _first_line(doc: str | None) -> str:
    return inspect.cleandoc(doc).split("\n", 1)[0] if doc else ""


class Bridge:
    """Registry of the methods and signals of the bridge, reached as ``host.bridge``.

    It implements :class:`~libervia.backend.core.interfaces.Bridge`.

    :param host: the backend
    """

    def __init__(self, host: BridgeHost) -> None:
        self.host = host
        self.methods: dict[str, Method] = {}
        self.signals: dict[str, Signal] = {}
        #: live connections, set once the service listens
        self.factory: BridgeFactory | None = None
        self.started_at = host.reactor.seconds()
        self._register_builtins()

    # registration

    def register_method(
        self,
        name: str,
        func: Callable[..., Any],
        doc: str | None = None,
        with_connection: bool = False,
    ) -> None:
        """Make ``func`` callable by frontends as ``name``.

        :param name: lower case, digits and ``_``, optionally dotted (``pubsub.get``)
        :param func: called with the request's params as keyword arguments; may return
            a value, a Deferred or a coroutine; the result must be JSON-serialisable.  It
            raises a :class:`~libervia.backend.core.exceptions.BackendError` subclass for
            errors the frontend should see (other exceptions become an internal error).
            Every parameter has a type hint (see :mod:`.params`), which each call is
            checked against before ``func`` runs
        :param doc: one-line description (default: first line of ``func``'s docstring)
        :param with_connection: ``func`` also receives ``connection``, the
            :class:`~.protocol.BridgeProtocol` of the caller (to subscribe it to
            something, for instance)
        :raise ConflictError: a method with this name exists
        :raise ValueError: invalid name
        :raise UncheckableSignature: a parameter of ``func`` has no type hint, or one
            that can't be checked against JSON values
        """
        if not _NAME_RE.match(name):
            raise ValueError(
                f"invalid bridge method name {name!r}: use lower case letters, digits "
                "and _, optionally dotted"
            )
        if name in self.methods:
            raise ConflictError(f"bridge method {name!r} is already registered")
        reserved = frozenset({"connection"}) if with_connection else frozenset()
        parameters = parameters_of(name, func, reserved)
        if with_connection and "connection" not in inspect.signature(func).parameters:
            raise UncheckableSignature(
                f"bridge method {name!r}: with_connection=True, but it takes no "
                "\"connection\" parameter")
        self.methods[name] = Method(
            name=name,
            func=func,
            doc=doc if doc is not None else _first_line(func.__doc__),
            with_connection=with_connection,
            parameters=parameters,
        )

    def unregister_method(self, name: str) -> None:
        """Remove a method (when a plugin is unloaded); unknown names are ignored."""
        self.methods.pop(name, None)

    def register_signal(self, name: str, doc: str = "") -> None:
        """Declare a signal frontends may subscribe to.

        :raise ConflictError: a signal with this name exists
        :raise ValueError: invalid name
        """
        if not _NAME_RE.match(name):
            raise ValueError(f"invalid bridge signal name {name!r}")
        if name in self.signals:
            raise ConflictError(f"bridge signal {name!r} is already registered")
        self.signals[name] = Signal(name, doc)

    def is_wanted(self, name: str) -> bool:
        """Whether a frontend is subscribed to signal ``name`` now (to spare building
        the data of a signal nobody would receive)."""
        return self.factory is not None and any(
            c.wants(name) for c in self.factory.connections)

    def emit_signal(self, name: str, **data: Any) -> int:
        """Send signal ``name`` to the subscribed frontends, as a JSON-RPC notification.

        It never blocks nor raises for a frontend's sake: a frontend not reading is
        disconnected once its buffer is full.

        :param data: JSON-serialisable values, sent as the notification's params
        :return: how many frontends it was sent to
        :raise ValueError: undeclared signal (see :meth:`register_signal`)
        """
        if name not in self.signals:
            raise ValueError(f"bridge signal {name!r} is not registered")
        if self.factory is None:
            return 0
        receivers = [c for c in self.factory.connections if c.wants(name)]
        if not receivers:
            return 0
        try:
            frame = encode({"jsonrpc": "2.0", "method": name, "params": data})
        except (TypeError, ValueError):
            log.failure("bridge: signal {name} has data JSON can't represent", name=name)
            return 0
        for connection in receivers:
            connection.write_frame(frame)
        return len(receivers)

    # dispatch

    def call(
        self, name: str, params: dict[str, Any], connection: BridgeProtocol | None = None
    ) -> defer.Deferred:
        """Call method ``name`` with ``params``; a Deferred of its result.

        It fails with :class:`~.errors.MethodNotFound` or :class:`~.errors.InvalidParams`
        before calling anything when the method or its parameters are wrong.
        """
        method = self.methods.get(name)
        if method is None:
            return defer.fail(errors.MethodNotFound(
                f"unknown method {name!r}: is the plugin providing it loaded? "
                "(bridge_info lists the methods)"
            ))
        try:
            kwargs = method.bind(params, connection)
        except errors.InvalidParams:
            return defer.fail()
        profile = kwargs.get(PROFILE_PARAMETER)
        if isinstance(profile, str):
            # a method taking a profile never runs for one that does not exist: the
            # caller learns that, not that it is "not connected" or has nothing cached
            d = self.host.clients.check_profile(profile)
            d.addCallback(lambda __: maybe_async_call(method.func, **kwargs))
            return d
        return maybe_async_call(method.func, **kwargs)

    # built-in methods

    def _register_builtins(self) -> None:
        self.register_method("bridge_info", self.bridge_info)
        self.register_method("backend_status", self.backend_status)
        self.register_method("plugin_list", self.plugin_list)
        self.register_method("subscribe", self.subscribe, with_connection=True)
        self.register_method("unsubscribe", self.unsubscribe, with_connection=True)
        self.register_signal(
            "backend_status", "the backend's status changed: params {status}"
        )
        self.host.trigger.add(BACKEND_STATUS, self._on_backend_status)

    def _on_backend_status(self, status: str) -> bool:
        self.emit_signal("backend_status", status=status)
        return True

    def bridge_info(self) -> dict[str, Any]:
        """Protocol and backend versions, limits, and the methods and signals offered."""
        factory = self.factory
        return {
            "protocol": PROTOCOL_NAME,
            "protocol_version": PROTOCOL_VERSION,
            "backend_version": self.host.version,
            "max_frame_size": factory.max_frame_size if factory else DEFAULT_MAX_FRAME_SIZE,
            "methods": {name: m.doc for name, m in sorted(self.methods.items())},
            "signals": {name: s.doc for name, s in sorted(self.signals.items())},
        }

    def backend_status(self) -> dict[str, Any]:
        """Status of the backend: status, version, uptime (seconds) and readiness."""
        return {
            "status": self.host.status,
            "version": self.host.version,
            "uptime": round(self.host.reactor.seconds() - self.started_at, 3),
            "ready": self.host.is_ready,
        }

    def plugin_list(self) -> list[dict[str, Any]]:
        """Every plugin found and what became of it (loaded ones first)."""
        return self.host.plugin_manager.report()

    def subscribe(
        self, connection: BridgeProtocol, signals: list[str] | Literal["*"] | None = None
    ) -> list[str] | str:
        """Receive the given signals (all of them when ``signals`` is omitted or "*").

        :return: the signals now subscribed to ("*" for all)
        """
        if signals is None or signals == ALL_SIGNALS:
            connection.subscriptions = ALL_SIGNALS
            return ALL_SIGNALS
        names = self._check_signal_names(signals)
        if connection.subscriptions != ALL_SIGNALS:
            assert isinstance(connection.subscriptions, set)
            connection.subscriptions |= set(names)
        return self._subscriptions(connection)

    def unsubscribe(
        self, connection: BridgeProtocol, signals: list[str] | Literal["*"] | None = None
    ) -> list[str] | str:
        """Stop receiving the given signals (all of them when ``signals`` is omitted).

        :return: the signals still subscribed to
        """
        if signals is None or signals == ALL_SIGNALS:
            connection.subscriptions = set()
            return []
        names = self._check_signal_names(signals)
        if connection.subscriptions == ALL_SIGNALS:
            connection.subscriptions = set(self.signals)
        assert isinstance(connection.subscriptions, set)
        connection.subscriptions -= set(names)
        return self._subscriptions(connection)

    def _check_signal_names(self, signals: Any) -> list[str]:
        if not isinstance(signals, list) or not all(isinstance(s, str) for s in signals):
            raise errors.InvalidParams('"signals" must be a list of signal names or "*"')
        unknown = sorted(set(signals) - set(self.signals))
        if unknown:
            raise errors.InvalidParams(
                f"unknown signal(s): {', '.join(unknown)} (bridge_info lists the signals)"
            )
        return signals

    @staticmethod
    def _subscriptions(connection: BridgeProtocol) -> list[str] | str:
        subscriptions = connection.subscriptions
        return subscriptions if isinstance(subscriptions, str) else sorted(subscriptions)


def _owned_by_us(st: os.stat_result) -> bool:
    return st.st_uid == os.getuid()


def prepare_socket_dir(path: Path) -> None:
    """Create the socket's folder (mode 0700) or check an existing one.

    An existing folder of ours readable by others is restricted to 0700: the socket
    gives full control of the backend's accounts.

    :raise StartupError: the folder can't be created
    """
    parent = path.parent
    try:
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = parent.stat()
    except OSError as e:
        raise StartupError(
            f"can't create the bridge socket folder {parent}: {e.strerror}; set "
            "[bridge] socket to a path in a folder you can write to"
        ) from e
    if st.st_mode & 0o077:
        if _owned_by_us(st) and not st.st_mode & stat.S_ISVTX:
            os.chmod(parent, 0o700)
        else:
            log.warn(
                "the bridge socket folder {folder} is accessible to other users; the "
                "socket itself is 0600, but prefer a private folder", folder=parent,
            )


def remove_stale_socket(path: Path) -> None:
    """Remove a socket left by a backend that died; refuse if one is alive.

    :raise StartupError: another backend answers on ``path``, or ``path`` is not a
        socket
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(
            f"{path} exists and is not a socket: remove it or set [bridge] socket to "
            "another path"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1)
        probe.connect(str(path))
    except OSError as e:
        if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise StartupError(f"can't check the bridge socket {path}: {e}") from e
    else:
        raise StartupError(
            f"another backend is already running with the bridge socket {path}: stop "
            "it first, or give this one another [bridge] socket"
        )
    finally:
        probe.close()
    log.info("removing the stale bridge socket {path}", path=path)
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class BridgeService(service.Service):
    """Listens on the bridge socket while running.

    :param host: the backend, whose ``bridge`` attribute it serves
    """

    name = "bridge"

    def __init__(self, host: BridgeHost) -> None:
        self.host = host
        self.port: IListeningPort | None = None
        self.path: Path | None = None

    def startService(self) -> None:  # noqa: N802 (Twisted API)
        config = self.host.config
        path = socket_path(config)
        factory = BridgeFactory(
            self.host.bridge,
            max_frame_size=config.get("bridge", "max_frame_size"),
            max_buffer=config.get("bridge", "max_buffer"),
            max_clients=config.get("bridge", "max_clients"),
        )
        prepare_socket_dir(path)
        remove_stale_socket(path)
        # bind() creates the socket with the umask's mode before listenUNIX chmods it to
        # 0600; the folder is private (0700, see prepare_socket_dir), which closes that
        # window. The umask is not changed: it is process-wide, and a thread creating a
        # folder meanwhile (the storage's) would get one it can't enter.
        try:
            self.port = self.host.reactor.listenUNIX(
                str(path), factory, mode=0o600, wantPID=True
            )
        except error.CannotListenError as e:
            if "lock" in str(e.socketError).lower():
                raise StartupError(
                    f"another backend is starting or running with the bridge socket "
                    f"{path} (lock file {path}.lock): stop it first, or give this one "
                    "another [bridge] socket"
                ) from None
            raise StartupError(f"can't listen on the bridge socket {path}: "
                               f"{e.socketError}") from None
        self.path = path
        self.host.bridge.factory = factory
        super().startService()
        log.info("bridge listening on {path}", path=path)

    def stopService(self) -> defer.Deferred | None:  # noqa: N802 (Twisted API)
        super().stopService()
        bridge = self.host.bridge
        if bridge.factory is not None:
            bridge.factory.disconnect_all()
            bridge.factory = None
        if self.port is None:
            return None
        port, self.port = self.port, None
        return defer.maybeDeferred(port.stopListening)
