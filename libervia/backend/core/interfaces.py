"""Contracts between the parts of the backend, as :class:`typing.Protocol` classes.

The kernel does not import the packages built on it (``memory``, ``xmpp``, ``bridge``,
``plugins``, ``app``), yet they all talk to each other through the *host*, the object
every plugin receives (``Main(host)``).  These protocols say what each side may use:

* :class:`Host`: what plugins and the bridge may use of the backend
  (:class:`libervia.backend.app.main.Backend` fits it);
* :class:`Client`: what plugins use of the connection of a profile
  (:class:`libervia.backend.xmpp.client.XMPPClient` fits it), and :class:`Clients`, the
  connected profiles (``host.clients``);
* :class:`Bridge`: the bridge's registration API (``host.bridge``);
* the plugin hooks: :class:`AsyncInit`, :class:`HandlerProvider`,
  :class:`ProfileConnecting`, :class:`ProfileConnected`,
  :class:`ProfileDisconnecting`, :class:`ProfileDisconnected`, :class:`Unload`.  A
  plugin's class implements those it needs; the plugin loader and the client manager
  test them with ``isinstance`` (they are runtime checkable, which checks that the
  method exists, not its signature).

A hook may be a plain method, a coroutine function or return a Deferred: the caller
awaits whichever it gets (:func:`~libervia.backend.core.async_utils.maybe_async_call`).
"""

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from twisted.internet import defer
from twisted.internet.interfaces import IConnector, IDelayedCall, IListeningPort
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish
from wokkel.generic import Request
from wokkel.subprotocols import XMPPHandler

from libervia.backend.core.config import Config
from libervia.backend.core.triggers import TriggerManager

#: what a hook returns: nothing, or something to wait for
HookResult = Awaitable[None] | None


class Reactor(Protocol):
    """The parts of Twisted's reactor the backend's parts use through ``host.reactor``.

    Life cycle (``IReactorCore``), time (``IReactorTime``), and the connections of the
    XMPP clients and the bridge (``IReactorTCP``, ``IReactorSSL``, ``IReactorUNIX``).
    Tests give a
    ``MemoryReactorClock``, or a ``task.Clock`` where nothing connects.
    """

    @property
    def running(self) -> bool:
        """The reactor is running (it has started and not stopped)."""

    def callWhenRunning(  # noqa: N802 (Twisted API)
        self, callable: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Call ``callable`` once the reactor runs (now if it does)."""

    def stop(self) -> None:
        """Stop the reactor: the backend shuts down."""

    def seconds(self) -> float:
        """The reactor's current time, in seconds."""

    def callLater(  # noqa: N802 (Twisted API)
        self, delay: float, callable: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> IDelayedCall:
        """Call ``callable`` in ``delay`` seconds."""

    def connectTCP(  # noqa: N802 (Twisted API)
        self, host: str, port: int, factory: Any, timeout: float = 30,
        bindAddress: Any = None,  # noqa: N803 (Twisted API)
    ) -> IConnector:
        """Open a TCP connection served by ``factory`` (a ``ClientFactory``)."""

    def connectSSL(  # noqa: N802 (Twisted API)
        self, host: str, port: int, factory: Any, contextFactory: Any,  # noqa: N803
        timeout: float = 30, bindAddress: Any = None,  # noqa: N803 (Twisted API)
    ) -> IConnector:
        """Open a TLS connection served by ``factory``, with ``contextFactory``'s options."""

    def listenUNIX(  # noqa: N802 (Twisted API)
        self, address: str, factory: Any, backlog: int = 50, mode: int = 0o666,
        wantPID: bool = False,  # noqa: N803 (Twisted API)
    ) -> IListeningPort:
        """Listen on the UNIX socket ``address``, serving with ``factory``."""


@runtime_checkable
class Bridge(Protocol):
    """The registration API of the bridge, reached as ``host.bridge``.

    It exists as soon as the host does: plugins register their methods and signals in
    their ``__init__``, and frontends can call them once the backend is ready.
    """

    @property
    def signals(self) -> Mapping[str, Any]:
        """The signals declared so far, by name."""

    def register_method(
        self,
        name: str,
        func: Callable[..., Any],
        doc: str | None = None,
        with_connection: bool = False,
    ) -> None:
        """Make ``func`` callable by frontends as ``name``.

        :param name: lower case, digits and ``_``, optionally dotted (``pubsub.get``)
        :param func: called with the request's params as keyword arguments; it returns
            JSON-serialisable data (or a Deferred or a coroutine of it), and raises a
            :class:`~libervia.backend.core.exceptions.BackendError` for errors the
            frontend should see
        :param doc: one-line description (default: first line of ``func``'s docstring)
        :param with_connection: ``func`` also receives ``connection``, the frontend's
            connection
        :raise ConflictError: a method with this name exists
        :raise ValueError: invalid name
        """

    def unregister_method(self, name: str) -> None:
        """Remove a method (when a plugin is unloaded); unknown names are ignored."""

    def register_signal(self, name: str, doc: str = "") -> None:
        """Declare a signal frontends may subscribe to.

        :raise ConflictError: a signal with this name exists
        :raise ValueError: invalid name
        """

    def is_wanted(self, name: str) -> bool:
        """Whether a frontend is subscribed to signal ``name`` now: a signal whose data
        costs something to build (items as XML text) is built only then."""

    def emit_signal(self, name: str, **data: Any) -> int:
        """Send a declared signal, with JSON-serialisable ``data``, to its subscribers.

        It never blocks nor raises for a frontend's sake.

        :return: how many frontends it was sent to
        :raise ValueError: undeclared signal
        """


class ProfileIdentity(Protocol):
    """Who a connection is for: the profile's name and its account's JID."""

    @property
    def name(self) -> str:
        """The profile's name (``li -p NAME``)."""

    @property
    def jid(self) -> str:
        """The account's JID, as configured (bare or full)."""


@runtime_checkable
class Client(Protocol):
    """The XMPP connection of one profile, as plugins use it.

    Plugins receive it in their hooks and bridge methods (``host.clients.get(name)``);
    their Wokkel handlers are attached to it, so that what they send waits for the
    stream to be initialized.
    """

    @property
    def profile(self) -> ProfileIdentity:
        """The profile this connection is for."""

    @property
    def jid(self) -> JID:
        """The account's JID (``client.jid.userhostJID()`` is the PEP service)."""

    @property
    def is_connected(self) -> bool:
        """The stream is up: authenticated and bound."""

    def send(self, obj: domish.Element | str) -> None:
        """Send a stanza; kept until the stream is initialized if it is not yet."""

    def request(self, request: Request) -> defer.Deferred:
        """Send an IQ request; a Deferred of the answer (the ``<iq/>`` element).

        It fails with a ``StanzaError`` when the server answers with an error.
        """

    def hold_reading(self, hold: bool) -> None:
        """Stop (``True``) or resume reading what the server sends (flow control)."""

    def info(self) -> dict[str, Any]:
        """What the connection negotiated (state, bound JID, SASL mechanism, TLS)."""


@runtime_checkable
class Clients(Protocol):
    """The connected profiles, reached as ``host.clients``."""

    def get(self, name: str) -> Client:
        """The client of a connected (or connecting) profile.

        :raise NotConnected: the profile is not connected
        """

    def check_profile(self, name: str) -> defer.Deferred:
        """Fire (with ``None``) if a profile named ``name`` exists; fail with
        :class:`~libervia.backend.core.exceptions.ProfileNotFound` otherwise.

        The bridge calls it for the ``profile`` parameter of every method.
        """

    def is_connected(self, name: str) -> bool:
        """The profile's stream is up."""


@runtime_checkable
class Host(Protocol):
    """What plugins and the bridge may use of the backend (the object given to plugins).

    The database (``storage``) and the profiles (``profiles``) belong to layers built on
    the kernel: code that uses them types the host with the protocols of those layers
    (:class:`libervia.backend.xmpp.profiles.StorageHost`,
    :class:`libervia.backend.xmpp.clients.ConnectionHost`), which extend this one.
    """

    #: the backend's version
    version: str
    #: what the backend is doing: ``starting``, ``ready``, ``stopping``, ``stopped`` or
    #: ``failed`` (each change fires the ``backend_status`` trigger point)
    status: str
    #: every part has started
    is_ready: bool
    #: the validated configuration
    config: Config
    #: the reactor the backend runs on
    reactor: Reactor
    #: trigger points (see :mod:`libervia.backend.core.trigger_names` for the kernel's)
    trigger: TriggerManager
    #: the bridge's registration API
    bridge: Bridge
    #: the connected profiles
    clients: Clients

    @property
    def plugins(self) -> Mapping[str, Any]:
        """Instances of the loaded plugins, by import name (``host.plugins["XEP-0060"]``).

        Each is of its own plugin's class, which the caller knows from the import name.
        """


# plugin hooks: a plugin's main class implements those it needs


@runtime_checkable
class AsyncInit(Protocol):
    """A plugin with initialisation to wait for before the next plugin loads."""

    def async_init(self) -> HookResult:
        """Finish initialising; a failure (or a time-out) unloads the plugin."""


@runtime_checkable
class HandlerProvider(Protocol):
    """A plugin declaring ``handler: True``: it has a handler for each profile's stream."""

    def get_handler(self, client: Client) -> XMPPHandler | None:
        """A Wokkel handler for ``client``'s stream (or ``None``).

        It is attached before the connection opens: it sees every stream of the
        connection, reconnections included.
        """


@runtime_checkable
class ProfileConnecting(Protocol):
    """A plugin to tell before a profile's connection opens."""

    def profile_connecting(self, client: Client) -> HookResult:
        """Called before the connection of ``client`` opens."""


@runtime_checkable
class ProfileConnected(Protocol):
    """A plugin to tell once a profile is connected."""

    def profile_connected(self, client: Client) -> HookResult:
        """Called once ``client``'s stream is initialized, and after each reconnection."""


@runtime_checkable
class ProfileDisconnecting(Protocol):
    """A plugin with something to send before a profile is disconnected on purpose."""

    def profile_disconnecting(self, client: Client) -> HookResult:
        """Called before ``client``'s stream is closed on purpose, while it may still be
        up (``client.is_connected`` tells): the last stanzas sent here go out before
        the stream closes (the presence plugin says the profile is unavailable)."""


@runtime_checkable
class ProfileDisconnected(Protocol):
    """A plugin to tell once a profile is disconnected on purpose."""

    def profile_disconnected(self, client: Client) -> HookResult:
        """Called once ``client``'s connection is closed on purpose."""


@runtime_checkable
class Unload(Protocol):
    """A plugin holding resources to release when the backend stops."""

    def unload(self) -> HookResult:
        """Release what the plugin holds; plugins unload in reverse loading order."""
