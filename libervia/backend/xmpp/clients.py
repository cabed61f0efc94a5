"""Connected profiles: the :class:`ClientManager` (``host.clients``) and its service.

The manager builds each profile's :class:`~libervia.backend.xmpp.client.XMPPClient` with
what the profile stores: password, SASL policy (mechanisms allowed, whether SCRAM was
seen before) and SCRAM key cache (encrypted like the password).  It attaches the
plugins' handlers, calls their profile hooks and tells frontends about connection
state changes (bridge signal ``connection_state``).

Plugin hooks, all optional, plain or asynchronous, called in plugin loading order; a
plugin implements the protocol of :mod:`libervia.backend.core.interfaces` named after
each:

``get_handler(client)`` (:class:`~libervia.backend.core.interfaces.HandlerProvider`)
    (plugins declaring ``handler: True``) returns a Wokkel ``XMPPHandler`` attached to
    the profile's stream;
``profile_connecting(client)`` (:class:`~libervia.backend.core.interfaces.ProfileConnecting`)
    before the connection is opened;
``profile_connected(client)`` (:class:`~libervia.backend.core.interfaces.ProfileConnected`)
    once the stream is initialized (and after each reconnection);
``profile_disconnecting(client)`` (:class:`~libervia.backend.core.interfaces.ProfileDisconnecting`)
    before the connection is closed on purpose (the stream may still be up);
``profile_disconnected(client)`` (:class:`~libervia.backend.core.interfaces.ProfileDisconnected`)
    once the connection is closed on purpose.
"""

import json
from typing import Any, Protocol, runtime_checkable

from twisted.application import service
from twisted.internet import defer
from twisted.python.failure import Failure

from libervia.backend.core.async_utils import maybe_async_call
from libervia.backend.core.exceptions import NotConnected
from libervia.backend.core.interfaces import (
    HandlerProvider,
    ProfileConnected,
    ProfileConnecting,
    ProfileDisconnected,
    ProfileDisconnecting,
)
from libervia.backend.core.log import getLogger
from libervia.backend.core.plugins import PluginManager
from libervia.backend.memory.storage import Storage
from libervia.backend.xmpp.client import ConnectionState, XMPPClient
from libervia.backend.xmpp.profiles import ConnectionOptions, ProfileManager, StorageHost
from libervia.backend.xmpp.sasl.initializer import SASLResult
from libervia.backend.xmpp.sasl.mechanisms import SASLPolicy
from libervia.backend.xmpp.sasl.scram_keys import ScramKeyCache
from libervia.backend.xmpp.steps import SECTION

log = getLogger(__name__)

SASL_NAMESPACE = "sasl"
SCRAM_SEEN_KEY = "scram_seen"
KEY_CACHE_KEY = "scram_keys"
#: bridge signal sent when a profile's connection state changes
CONNECTION_STATE_SIGNAL = "connection_state"


@runtime_checkable
class ConnectionHost(StorageHost, Protocol):
    """The host, with the profiles: what the connection stack needs of the backend."""

    #: the profiles and their stored settings
    profiles: ProfileManager
    #: the connected profiles
    clients: "ClientManager"
    #: the plugin loader (which plugins give a handler to each connection)
    plugin_manager: PluginManager


#: a profile hook: the protocol a plugin implements, and the name of its method
_Hook = tuple[type, str]

PROFILE_CONNECTING: _Hook = (ProfileConnecting, "profile_connecting")
PROFILE_CONNECTED: _Hook = (ProfileConnected, "profile_connected")
PROFILE_DISCONNECTING: _Hook = (ProfileDisconnecting, "profile_disconnecting")
PROFILE_DISCONNECTED: _Hook = (ProfileDisconnected, "profile_disconnected")


class ClientManager:
    """Connect and disconnect profiles; reached as ``host.clients``.

    :param client_options: extra keyword arguments for every
        :class:`~libervia.backend.xmpp.client.XMPPClient` (tests use it to force a TLS
        version)
    """

    def __init__(self, host: ConnectionHost, **client_options: Any) -> None:
        self.host = host
        self.clients: dict[str, XMPPClient] = {}
        self.client_options = client_options
        #: callers waiting for a connection being set up, by profile
        self._pending: dict[str, list[defer.Deferred]] = {}
        #: why the last connection attempt of a profile failed, for :meth:`info`
        self._errors: dict[str, str] = {}
        host.bridge.register_signal(
            CONNECTION_STATE_SIGNAL,
            "a profile's connection changed: params {profile, state, error}",
        )

    @property
    def profiles(self) -> ProfileManager:
        return self.host.profiles

    @property
    def storage(self) -> Storage:
        return self.host.storage

    def get(self, name: str) -> XMPPClient:
        """The client of a connected (or connecting) profile.

        :raise NotConnected: the profile is not connected (the bridge has checked that
            it exists: :meth:`check_profile`)
        """
        try:
            return self.clients[name]
        except KeyError:
            error = self._errors.get(name)
            state = f" (failed: {error})" if error else ""
            raise NotConnected(
                f"profile {name!r} is not connected{state}: connect it first") from None

    def check_profile(self, name: str) -> defer.Deferred:
        """Fire (with ``None``) once checked that a profile named ``name`` exists.

        It fails with :class:`~libervia.backend.core.exceptions.ProfileNotFound`
        otherwise.  A connected profile exists: no database call for it.
        """
        if name in self.clients:
            return defer.succeed(None)
        return defer.ensureDeferred(self.profiles.require(name))

    def is_connected(self, name: str) -> bool:
        client = self.clients.get(name)
        return client is not None and client.is_connected

    async def connect(self, name: str) -> XMPPClient:
        """Connect a profile (nothing to do if it is connected).

        :raise ProfileNotFound: no such profile
        :raise ConnectionFailed: or a SASL error, if the connection failed
        """
        client = self.clients.get(name)
        if client is not None and client.state in (
            ConnectionState.CONNECTED, ConnectionState.CONNECTING,
            ConnectionState.RECONNECTING,
        ):
            if client.state is ConnectionState.CONNECTED:
                return client
            return await client.connect()
        waiters = self._pending.get(name)
        if waiters is not None:
            # a connection is being set up (autoconnect and a frontend at once): share
            # it, a second client would log the account in twice
            d: defer.Deferred = defer.Deferred()
            waiters.append(d)
            return await d
        self._pending[name] = waiters = []
        try:
            client = await self._connect_new(name)
        except BaseException as e:
            failure = Failure()
            self._errors[name] = str(e) or type(e).__name__
            del self._pending[name]
            for d in waiters:
                d.errback(failure)
            raise
        self._errors.pop(name, None)
        del self._pending[name]
        for d in waiters:
            d.callback(client)
        return client

    async def _connect_new(self, name: str) -> XMPPClient:
        profile = await self.profiles.get(name)
        password = await self.profiles.get_password(name)
        policy = await self._policy(name, profile.options)
        key_cache = await self._key_cache(name)
        client = XMPPClient(
            self.host, profile, password,
            policy=policy,
            key_cache=key_cache,
            on_authenticated=lambda result: self._on_authenticated(name, result),
            on_state_change=self._on_state_change,
            reactor=self.host.reactor,
            **{"connect_timeout": self.host.config.get(SECTION, "connect_timeout"),
               "step_timeout": self.host.config.get(SECTION, "step_timeout"),
               **self.client_options},
        )
        self.clients[name] = client
        await self._attach_handlers(client)
        await self._call_hooks(PROFILE_CONNECTING, client)
        try:
            await client.connect()
        except BaseException:
            self.clients.pop(name, None)
            raise
        return client

    async def disconnect(self, name: str) -> None:
        """Disconnect a profile.

        :raise NotConnected: the profile is not connected
        """
        client = self.get(name)
        await self._call_hooks(PROFILE_DISCONNECTING, client)
        await client.disconnect()
        self.clients.pop(name, None)
        self._errors.pop(name, None)
        await self._call_hooks(PROFILE_DISCONNECTED, client)

    async def disconnect_all(self) -> None:
        for name in list(self.clients):
            try:
                await self.disconnect(name)
            except Exception:
                log.failure("error while disconnecting profile {name}", name=name)

    def info(self, name: str) -> dict[str, Any]:
        """Connection details of a profile (see :meth:`XMPPClient.info`).

        A profile whose last connection attempt failed is ``failed``, with the error,
        until it connects or is disconnected.
        """
        client = self.clients.get(name)
        if client is None:
            error = self._errors.get(name)
            if error is not None:
                return {"profile": name, "state": ConnectionState.FAILED.value,
                        "error": error}
            return {"profile": name, "state": ConnectionState.DISCONNECTED.value}
        return client.info()

    def forget(self, name: str) -> None:
        """Drop what is remembered of a profile's connection (it was deleted)."""
        self._errors.pop(name, None)

    async def password_changed(self, name: str) -> None:
        """Forget the SCRAM keys derived from the previous password of a profile.

        Keys cached for an unchanged salt would otherwise keep logging in with the old
        password.  A connected profile keeps its connection; the new password is used
        from its next connection.
        """
        client = self.clients.get(name)
        if client is not None:
            cache = client.factory.authenticator.sasl_key_cache
            if cache is not None:
                cache.on_change = None
                cache.clear()
        await self.storage.profiles.del_private_value(SASL_NAMESPACE, KEY_CACHE_KEY, binary=True,
                                                      profile=name)

    # SASL state of a profile

    async def _policy(self, name: str, options: ConnectionOptions) -> SASLPolicy:
        values = await self.storage.profiles.get_privates(SASL_NAMESPACE, [SCRAM_SEEN_KEY],
                                                          profile=name)
        return SASLPolicy(
            allowed_mechanisms=options.mechanisms or None,
            scram_seen=bool(values.get(SCRAM_SEEN_KEY)),
        )

    async def _key_cache(self, name: str) -> ScramKeyCache:
        cache = ScramKeyCache()
        values = await self.storage.profiles.get_privates(SASL_NAMESPACE, [KEY_CACHE_KEY],
                                                          binary=True, profile=name)
        token = values.get(KEY_CACHE_KEY)
        if token is not None:
            try:
                data = self.profiles.box.decrypt(token, f"{KEY_CACHE_KEY}:{name}")
                cache.load(json.loads(data))
            except Exception:
                log.warn("profile {name}: stored SCRAM keys unreadable, ignoring them",
                         name=name)
        cache.on_change = lambda c: self._save_key_cache(name, c)
        return cache

    def _save_key_cache(self, name: str, cache: ScramKeyCache) -> None:
        token = self.profiles.box.encrypt(json.dumps(cache.export()).encode(),
                                          f"{KEY_CACHE_KEY}:{name}")
        d = self.storage.profiles.set_private_value(SASL_NAMESPACE, KEY_CACHE_KEY, token,
                                                    binary=True, profile=name)
        d.addErrback(lambda f: log.failure("can't save SCRAM keys of {name}", f, name=name))

    def _on_authenticated(self, name: str, result: SASLResult) -> None:
        if result.scram:
            d = self.storage.profiles.set_private_value(SASL_NAMESPACE, SCRAM_SEEN_KEY, True,
                                                        profile=name)
            d.addErrback(lambda f: log.failure("can't save SASL state of {name}", f,
                                               name=name))

    # plugins and frontends

    async def _attach_handlers(self, client: XMPPClient) -> None:
        for import_name, plugin in self.host.plugins.items():
            record = self.host.plugin_manager.records.get(import_name)
            if record is None or record.info is None or not record.info.handler:
                continue
            if not isinstance(plugin, HandlerProvider):
                log.warn("plugin {name} declares a handler but has no get_handler",
                         name=import_name)
                continue
            try:
                handler = await maybe_async_call(plugin.get_handler, client)
            except Exception:
                log.failure("plugin {name} failed to give its handler", name=import_name)
                continue
            if handler is not None:
                handler.setHandlerParent(client)

    async def _call_hooks(self, hook: _Hook, client: XMPPClient) -> None:
        protocol, method = hook
        for import_name, plugin in self.host.plugins.items():
            if not isinstance(plugin, protocol):
                continue
            try:
                await maybe_async_call(getattr(plugin, method), client)
            except Exception:
                log.failure("plugin {name}: {hook} failed", name=import_name, hook=method)

    def _on_state_change(self, client: XMPPClient) -> None:
        self.host.bridge.emit_signal(CONNECTION_STATE_SIGNAL, profile=client.profile.name,
                                     state=client.state.value, error=client.error)
        if client.state is ConnectionState.CONNECTED:
            d = defer.ensureDeferred(self._call_hooks(PROFILE_CONNECTED, client))
            d.addErrback(lambda f: log.failure("profile_connected hooks failed", f))


class ProfilesService(service.Service):
    """Last part of the start-up: secrets key, profiles to connect automatically.

    Stopping it disconnects every profile.
    """

    name = "profiles"

    def __init__(self, host: ConnectionHost) -> None:
        self.host = host

    def startService(self) -> defer.Deferred:  # noqa: N802 (Twisted API)
        super().startService()
        return defer.ensureDeferred(self._start())

    async def _start(self) -> None:
        self.host.profiles.load_key()
        await self.host.profiles.register_public_words()
        for name in await self.host.profiles.autoconnect_profiles():
            # a profile failing to connect must not stop the backend
            d = defer.ensureDeferred(self.host.clients.connect(name))
            d.addErrback(lambda f, name=name: log.error(
                "profile {name} could not connect automatically: {reason}",
                name=name, reason=f.getErrorMessage(),
            ))

    def stopService(self) -> defer.Deferred:  # noqa: N802 (Twisted API)
        super().stopService()
        return defer.ensureDeferred(self.host.clients.disconnect_all())
