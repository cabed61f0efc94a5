"""The backend application: the host object plugins receive, and its start-up order.

:class:`Backend` is a service collection starting its parts one after the other,
each waited for (see :class:`~libervia.backend.core.service.AsyncMultiService`):

1. configuration (loaded and validated before the service is even built),
2. storage: database opened and migrated (see :mod:`libervia.backend.memory`),
3. plugins, in dependency order,
4. bridge: the local API frontends use,
5. profiles set to connect automatically.

It stops in the reverse order.  Once everything has started, :meth:`Backend.when_ready`
Deferreds fire; this is what tells systemd the service is ready.  If a part fails to
start, the reason is logged and the reactor stops with exit status 1.
"""

from collections.abc import Iterable
from importlib.metadata import EntryPoint
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.python.failure import Failure

import libervia.backend
from libervia.backend.app.api import CoreAPI
from libervia.backend.app.systemd import SystemdNotifier
from libervia.backend.bridge.server import Bridge, BridgeService
from libervia.backend.core.config import DEFAULT_SECTION, Config
from libervia.backend.core.exceptions import BackendError
from libervia.backend.core.interfaces import Reactor, Unload
from libervia.backend.core.log import getLogger
from libervia.backend.core.plugins import PluginManager
from libervia.backend.core.service import AsyncMultiService
from libervia.backend.core.trigger_names import BACKEND_STATUS
from libervia.backend.core.triggers import TriggerManager
from libervia.backend.memory.service import StorageService
from libervia.backend.xmpp.clients import ClientManager, ProfilesService
from libervia.backend.xmpp.profiles import ProfileManager

log = getLogger(__name__)


class PluginService(service.Service):
    """Loads the plugins when started; unloads them in reverse order when stopped."""

    name = "plugins"

    def __init__(self, host: "Backend") -> None:
        self.host = host

    def startService(self) -> defer.Deferred:
        super().startService()
        return defer.ensureDeferred(self.host.plugin_manager.load_all())

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return defer.ensureDeferred(self._unload())

    async def _unload(self) -> None:
        # plugins may hold resources: give them a chance to release them, last loaded first
        for import_name, plugin in reversed(list(self.host.plugins.items())):
            if not isinstance(plugin, Unload):
                continue
            try:
                await defer.maybeDeferred(plugin.unload)
            except Exception:
                log.failure("error while unloading plugin {name}", name=import_name)


class Backend(AsyncMultiService):
    """The backend: host of the plugins and root of the service tree.

    It implements :class:`~libervia.backend.core.interfaces.Host` (what plugins and the
    bridge may use of it) and the protocols of the layers that need more
    (:class:`~libervia.backend.xmpp.clients.ConnectionHost`).

    :param config: validated configuration
    :param reactor: reactor to use (injected by tests)
    :param plugin_entry_points: entry points to load instead of the installed ones
    """

    def __init__(
        self,
        config: Config,
        reactor: Reactor | None = None,
        plugin_entry_points: Iterable[EntryPoint] | None = None,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        # the configuration was checked when it was read, before the modules declaring
        # the core's other options (connection steps...) were imported: check it again,
        # so a bad value stops the start-up instead of the first connection
        config.validate()
        self.config = config
        self.version = libervia.backend.__version__
        self.trigger = TriggerManager()
        #: the local API; plugins register their methods and signals on it
        self.bridge = Bridge(self)
        #: profiles (XMPP accounts) and their stored settings
        self.profiles = ProfileManager(self)
        #: connected profiles
        self.clients = ClientManager(self)
        self.api = CoreAPI(self)
        #: readiness for systemd (Type=notify); does nothing outside systemd
        self.systemd = SystemdNotifier(self)
        self.plugin_manager = PluginManager(
            self,
            disabled=config.get(DEFAULT_SECTION, "plugins_disabled"),
            entry_points=plugin_entry_points,
            reactor=reactor,
        )
        #: set to 1 when the start-up failed, for launchers to use as exit status
        self.exit_status = 0
        self.is_ready = False
        self._ready_waiters: list[defer.Deferred] = []
        self._start_failure: Failure | None = None
        self.status = "stopped"
        self._build_services()

    def _build_services(self) -> None:
        """Add the parts of the backend in start-up order."""
        storage_service = StorageService(self.config, reactor=self.reactor)
        storage_service.setServiceParent(self)
        #: the database API (:class:`~libervia.backend.memory.storage.Storage`), usable by
        #: plugins: it is opened and migrated before they load
        self.storage = storage_service.storage
        PluginService(self).setServiceParent(self)
        BridgeService(self).setServiceParent(self)
        ProfilesService(self).setServiceParent(self)

    @property
    def plugins(self) -> dict[str, Any]:
        """Loaded plugin instances by import name."""
        return self.plugin_manager.plugins

    def when_ready(self) -> defer.Deferred:
        """Return a Deferred fired with the backend once it has fully started.

        It fails if the start-up fails.
        """
        if self.is_ready:
            return defer.succeed(self)
        if self._start_failure is not None:
            return defer.fail(self._start_failure)
        d: defer.Deferred = defer.Deferred()
        self._ready_waiters.append(d)
        return d

    def set_status(self, status: str) -> None:
        """Record what the backend is doing (shown by ``backend status``, systemd)."""
        self.status = status
        self.trigger.point(BACKEND_STATUS, status)

    def startService(self) -> defer.Deferred:
        log.info(
            "Libervia backend {version} starting ({sources})",
            version=self.version, sources=self.config.describe_sources(),
        )
        self.set_status("starting")
        # twistd starts the application before the reactor runs: the real start-up
        # (threads, sockets, signal handling) waits for the reactor
        started: defer.Deferred = defer.Deferred()
        self.reactor.callWhenRunning(
            lambda: super(Backend, self).startService().chainDeferred(started)
        )
        started.addCallbacks(self._on_started, self._on_start_failed)
        return started

    def _on_started(self, __: Any) -> None:
        if not self.running:  # stopped while starting
            return
        self.is_ready = True
        self.set_status("ready")
        log.info("backend ready")
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(self)

    def _on_start_failed(self, failure: Failure) -> None:
        self._start_failure = failure
        waiters, self._ready_waiters = self._ready_waiters, []
        if failure.check(defer.CancelledError):
            return
        self.exit_status = 1
        self.set_status("failed")
        if failure.check(BackendError):
            log.critical("backend can't start: {reason}", reason=failure.getErrorMessage())
        else:
            log.failure("backend can't start", failure)
        for d in waiters:
            d.errback(failure)
        if self.reactor.running:
            self.reactor.stop()

    def stopService(self) -> defer.Deferred:
        self.set_status("stopping")
        log.info("backend stopping")
        d = super().stopService()

        def stopped(__: Any) -> None:
            self.is_ready = False
            self.set_status("stopped")
            log.info("backend stopped")

        d.addCallback(stopped)
        return d
