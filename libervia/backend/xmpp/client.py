"""XMPP connection of a profile: TLS, SASL (SCRAM), reconnection.

Each connected profile has an :class:`XMPPClient`, a Wokkel stream manager (so plugins'
handlers are attached to it and send through it) over Twisted's XML stream.

Security rules of the connection:

* TLS always: STARTTLS is required (a server not offering it is refused before any
  authentication), or direct TLS (XEP-0368) when the profile asks for it.  The
  certificate is verified against the system's authorities, or the profile's CA file,
  and must match the JID's domain (``service_identity``), even when the profile
  connects to another host name or an address.  TLS 1.2 is the minimum.
* SASL with :mod:`libervia.backend.xmpp.sasl`: SCRAM (-PLUS when possible), PLAIN
  only over TLS and never once SCRAM has been seen for the account.
* Stream traffic is never logged: it carries authentication data.
* A DTD or an entity declaration from the server closes the stream (``restricted-xml``)
  before anything is expanded.

Time limits: every step of a connection where the server must answer (TCP, TLS
handshake, stream header and features, STARTTLS, SASL, resource binding, session) is
bounded by ``[xmpp] connect_timeout`` or ``[xmpp] step_timeout``
(:mod:`libervia.backend.xmpp.steps`).  A step running out aborts the attempt with
:class:`ConnectionTimeout`, naming the step and the server; it is then a failure like
the others (reported if it was the first attempt, retried after a lost connection).

Reconnection: after an unexpected loss of an established connection, the client
reconnects with an exponential back-off and jitter (Twisted's
:class:`~twisted.internet.protocol.ReconnectingClientFactory`).  Failures that a new
attempt would only repeat stop it: wrong credentials, a SCRAM protocol violation, a
certificate that does not verify, XML that XMPP forbids.  A first connection attempt
that fails is reported to the caller instead of being retried in the background.

Robustness of the stream: nothing one stanza or one plugin's handler does can leave a
stream half initialized.

* Every stanza is serialized and checked before it is written or queued
  (:func:`serialize_stanza`): one that can't be written as XML (a lone surrogate, a
  character XML forbids, an attribute that is not text) raises
  :class:`StanzaNotSerializable` to its sender (an IQ request's Deferred fails with
  it), and nothing reaches the stream.
* Stanzas queued while the stream was down are sent one by one once it is up again;
  one that fails then is dropped (its request failed, or a log line), the others go.
* A handler raising in ``makeConnection``, ``connectionInitialized`` or
  ``connectionLost`` is logged and skipped: the stream initializes, the other handlers
  are called, the profile ends ``connected``.
"""

import random
import re
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet import defer, ssl
from twisted.internet import error as net_error
from twisted.internet.interfaces import (
    IConnector,
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
)
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.protocols.jabber import xmlstream
from twisted.words.xish import domish
from wokkel.client import XMPPClientConnector
from wokkel.generic import Request
from wokkel.subprotocols import StreamManager
from zope.interface import implementer

from libervia.backend.core.exceptions import BackendError, NotConnected
from libervia.backend.core.interfaces import Host, Reactor
from libervia.backend.core.jids import parse_jid
from libervia.backend.core.log import getLogger
from libervia.backend.core.xml_tools import NOT_XML_CHAR
from libervia.backend.xmpp.profiles import Profile, secret_owner
from libervia.backend.xmpp.sasl import errors as sasl_errors
from libervia.backend.xmpp.sasl.initializer import SASLAuthenticator, SASLResult
from libervia.backend.xmpp.sasl.mechanisms import SASLPolicy
from libervia.backend.xmpp.sasl.scram_keys import ScramKeyCache
from libervia.backend.xmpp.steps import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_STEP_TIMEOUT,
    SECTION,
    TLS_HANDSHAKE_DONE_EVENT,
    ConnectionStep,
    StepTimer,
    watch_initializers,
)

log = getLogger(__name__)

DEFAULT_PORT = 5222
DEFAULT_DIRECT_TLS_PORT = 5223

_PEM_CERT_RE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


class ConnectionState(StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    FAILED = "failed"


class ConnectionFailed(BackendError):
    """The profile could not connect; the message says why and what to do."""


class CertificateError(ConnectionFailed):
    """The server's certificate was refused."""


class ConnectionTimeout(ConnectionFailed):
    """The server did not answer during a step of the connection, in the time allowed.

    :ivar step: the step that ran out of time
    :ivar server: the server, ``host:port`` (or the JID's domain before its address
        is known)
    :ivar timeout: the seconds the step was given
    """

    def __init__(self, step: ConnectionStep, server: str, timeout: float) -> None:
        self.step = step
        self.server = server
        self.timeout = timeout
        super().__init__(
            f"the server {server} did not answer during {step.value} within {timeout:g} "
            "s: connection attempt aborted; check that it is the XMPP client port of a "
            f"running server, or give it more time with [{SECTION}] {step.setting}"
        )


class RestrictedXMLError(ConnectionFailed):
    """The server sent XML that XMPP forbids (RFC 6120 §11.1): a DTD, an entity."""


class StanzaNotSerializable(BackendError, ValueError):
    """A stanza can't be written as XML; it was not sent (nor queued).

    The message says which stanza and which character or value is at fault; the
    caller must remove it from what it sends (XML 1.0 allows neither lone surrogates
    nor most control characters).
    """


_SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _stanza_label(obj: object) -> str:
    """How an error names a stanza: element name and id, never its content."""
    if domish.IElement.providedBy(obj):
        name = getattr(obj, "name", None)
        label = f"<{name}/>" if isinstance(name, str) and _SAFE_NAME_RE.match(name) else (
            "an element")
        stanza_id = getattr(obj, "attributes", {}).get("id")
        if isinstance(stanza_id, str) and _SAFE_NAME_RE.match(stanza_id):
            label += f" (id {stanza_id})"
        return f"stanza {label}"
    return "raw XML data"


def serialize_stanza(obj: object, xs: Any = None) -> bytes:
    """The bytes to write for ``obj`` on ``xs``, checked.

    ``obj`` is what :meth:`XmlStream.send` takes: an element, text or bytes.  Elements
    are serialized as Twisted's XMPP stream does (with the stream's namespace
    prefixes; ``jabber:client`` without a stream).

    :raise StanzaNotSerializable: ``obj`` can't be serialized, or holds a character
        XML forbids
    """
    label = _stanza_label(obj)
    try:
        if domish.IElement.providedBy(obj):
            prefixes = getattr(xs, "prefixes", None) or {}
            text = obj.toXml(prefixes=prefixes,
                             defaultUri=getattr(xs, "namespace", None) or "jabber:client",
                             prefixesInScope=list(prefixes.values()))
        elif isinstance(obj, bytes):
            text = obj.decode("utf-8")
        elif isinstance(obj, str):
            text = obj
        else:
            raise TypeError(f"{type(obj).__name__} is neither an element nor text")
    except Exception as e:  # noqa: BLE001 - whatever the serializer trips on
        raise StanzaNotSerializable(
            f"{label} can't be serialized ({type(e).__name__}): not sent; check the "
            "values it was built from"
        ) from None
    if not isinstance(text, str):
        raise StanzaNotSerializable(f"{label} serialized to {type(text).__name__}: not sent")
    bad = NOT_XML_CHAR.search(text)
    if bad is not None:
        raise StanzaNotSerializable(
            f"{label} holds the character U+{ord(bad.group()):04X}, which XML forbids: "
            "not sent; remove it from the values the stanza was built from"
        )
    return text.encode("utf-8")


@implementer(IHandshakeListener)
class RestrictedXmlStream(xmlstream.XmlStream):
    """Twisted's XML stream, refusing document type and entity declarations.

    It also tells its observers when a TLS handshake completes
    (:data:`~libervia.backend.xmpp.steps.TLS_HANDSHAKE_DONE_EVENT`): the connection
    times each step.

    Expat, left to itself, reads an internal DTD subset and expands the entities it
    declares: a server (or whoever sits before TLS) could inject text into stanzas or
    try an expansion bomb.  XMPP forbids DTDs, so the first one closes the stream with
    a ``restricted-xml`` stream error, before anything is expanded.
    """

    refusal: str | None = None

    def _initializeStream(self) -> None:  # noqa: N802 (Twisted API)
        super()._initializeStream()
        parser = self.stream.parser
        parser.StartDoctypeDeclHandler = lambda *a: self._refuse("a document type "
                                                                 "declaration (DTD)")
        parser.EntityDeclHandler = lambda *a: self._refuse("an entity declaration")

    def handshakeCompleted(self) -> None:  # noqa: N802 (Twisted API)
        self.dispatch(self, TLS_HANDSHAKE_DONE_EVENT)

    def send(self, obj: Any) -> None:
        """Write ``obj`` (an element, text or UTF-8 bytes), checked.

        :raise StanzaNotSerializable: ``obj`` can't be written as XML; nothing is
            written, the stream goes on
        """
        super().send(serialize_stanza(obj, self))

    def _refuse(self, what: str) -> None:
        self.refusal = (
            f"the server sent {what} on the XMPP stream, which XMPP forbids: connection "
            "closed; the server is misconfigured or hostile, tell its administrator"
        )
        log.warn("{refusal}", refusal=self.refusal)
        self.sendStreamError(jabber_error.StreamError("restricted-xml"))
        # stops expat here; Twisted's dataReceived drops the connection on it
        raise domish.ParserError(self.refusal)

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 (Twisted API)
        if self.refusal is not None:
            reason = Failure(RestrictedXMLError(self.refusal))
        super().connectionLost(reason)


def tls_options(
    domain: str,
    ca_file: str | None = None,
    max_version: ssl.TLSVersion | None = None,
) -> IOpenSSLClientConnectionCreator:
    """TLS client options verifying ``domain``'s certificate.

    :param ca_file: PEM file with the authorities to trust instead of the system's
    :param max_version: highest TLS version to negotiate (tests use it to force 1.2)
    """
    trust_root = None
    if ca_file is not None:
        try:
            with open(ca_file, "rb") as f:
                pem = f.read()
        except OSError as e:
            raise ConnectionFailed(f"can't read CA file {ca_file}: {e.strerror}") from None
        try:
            certificates = [ssl.Certificate.loadPEM(m.group())
                            for m in _PEM_CERT_RE.finditer(pem)]
        except (SSL.Error, crypto.Error) as e:
            raise ConnectionFailed(
                f"CA file {ca_file} holds a certificate that can't be read "
                f"({_ssl_error_text(e)}): give the profile a PEM file of the authority's "
                "certificates") from None
        if not certificates:
            raise ConnectionFailed(f"CA file {ca_file} holds no PEM certificate")
        trust_root = ssl.trustRootFromCertificates(certificates)
    extra: dict[str, Any] = {"raiseMinimumTo": ssl.TLSVersion.TLSv1_2}
    if max_version is not None:
        extra["lowerMaximumSecurityTo"] = max_version
    return ssl.optionsForClientTLS(domain, trustRoot=trust_root,
                                   extraCertificateOptions=extra)


class ProfileAuthenticator(SASLAuthenticator):
    """Twisted's client authenticator with our SASL, and direct TLS support."""

    def __init__(self, *args: Any, direct_tls: bool = False,
                 on_step: Callable[[ConnectionStep], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct_tls = direct_tls
        #: told when each initializer (STARTTLS, SASL, binding, session) starts
        self.on_step = on_step

    def associateWithStream(self, xs: xmlstream.XmlStream) -> None:  # noqa: N802
        super().associateWithStream(xs)
        if self.direct_tls:
            # the transport is TLS from the first byte: no STARTTLS step
            xs.initializers = [
                i for i in xs.initializers
                if not isinstance(i, xmlstream.TLSInitiatingInitializer)
            ]
        if self.on_step is not None:
            watch_initializers(xs, self.on_step)


class ClientFactory(xmlstream.XmlStreamFactory):
    """XML stream factory telling its client about connection failures.

    Reconnection delays double from ``initialDelay`` up to ``maxDelay``; each is then
    drawn uniformly in ``[(1 - jitter) * delay, delay]``, so that clients cut off
    together do not come back together, and no delay ever exceeds ``maxDelay``
    (Twisted's own Gaussian jitter has no bound).
    """

    initialDelay = 1.0
    factor = 2.0
    jitter = 0.3
    maxDelay = 300.0
    protocol = RestrictedXmlStream

    def __init__(self, authenticator: ProfileAuthenticator, client: "XMPPClient") -> None:
        super().__init__(authenticator)
        self.client = client
        self.random = random.Random()
        self._base_delay = self.initialDelay

    def resetDelay(self) -> None:  # noqa: N802 (Twisted API)
        super().resetDelay()
        self._base_delay = self.initialDelay

    def retry(self, connector: IConnector | None = None) -> None:
        if not self.continueTrying:
            return
        if connector is None:
            connector = self.connector
        if connector is None:
            return
        self.retries += 1
        if self.maxRetries is not None and self.retries > self.maxRetries:
            return
        if self.retries > 1:
            self._base_delay = min(self._base_delay * self.factor, self.maxDelay)
        self.delay = self.random.uniform(self._base_delay * (1 - self.jitter),
                                         self._base_delay)

        def reconnect() -> None:
            self._callID = None
            connector.connect()

        self._callID = self.clock.callLater(self.delay, reconnect)

    def startedConnecting(self, connector: IConnector) -> None:  # noqa: N802
        self.client.on_connecting(connector)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:  # noqa: N802
        if self.client.on_connection_failed(reason):
            super().clientConnectionFailed(connector, reason)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:  # noqa: N802
        if self.client.on_connection_lost(reason):
            super().clientConnectionLost(connector, reason)


def _iq_id(obj: object) -> str | None:
    """The id of an ``<iq/>`` stanza, ``None`` for anything else."""
    if domish.IElement.providedBy(obj) and getattr(obj, "name", None) == "iq":
        stanza_id = obj.attributes.get("id")
        return stanza_id if isinstance(stanza_id, str) else None
    return None


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _describe(reason: Failure) -> str:
    value = reason.value
    if isinstance(value, SSL.Error):
        return f"TLS error: {_ssl_error_text(value)}"
    return reason.getErrorMessage() or type(value).__name__


def _ssl_error_text(exc: SSL.Error | crypto.Error) -> str:
    parts = []
    for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
        if isinstance(item, tuple) and len(item) == 3:
            parts.append(str(item[2]))
    return ", ".join(parts) or str(exc)


def _is_certificate_failure(reason: Failure) -> bool:
    value = reason.value
    if isinstance(value, SSL.Error):
        text = _ssl_error_text(value).lower()
        return "certificate" in text or "verify" in text
    return type(value).__name__ == "VerificationError"  # service_identity


class XMPPClient(StreamManager):
    """The connection of one profile.

    It implements :class:`~libervia.backend.core.interfaces.Client`, what plugins use
    of it.

    :param host: the backend (plugins' handlers and hooks are taken from it)
    :param profile: the profile to connect
    :param password: its password
    :param policy: SASL settings
    :param key_cache: SCRAM derived keys of the account
    :param on_authenticated: called with the :class:`SASLResult` of each login
    :param tls_max_version: highest TLS version to use (tests)
    :param connect_timeout: seconds to open the TCP connection (``[xmpp]
        connect_timeout``)
    :param step_timeout: seconds the server may take for each later step (``[xmpp]
        step_timeout``)
    """

    def __init__(
        self,
        host: Host,
        profile: Profile,
        password: str,
        *,
        policy: SASLPolicy | None = None,
        key_cache: ScramKeyCache | None = None,
        on_authenticated: Callable[[SASLResult], None] | None = None,
        on_state_change: Callable[["XMPPClient"], None] | None = None,
        tls_max_version: ssl.TLSVersion | None = None,
        reactor: Reactor | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        step_timeout: float = DEFAULT_STEP_TIMEOUT,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.host = host
        self.profile = profile
        self.reactor = reactor
        self.jid = parse_jid(profile.jid)
        options = profile.options
        self.tls = tls_options(self.jid.host, options.ca_file, tls_max_version)
        self._on_authenticated = on_authenticated
        self._on_state_change = on_state_change
        authenticator = ProfileAuthenticator(
            self.jid, password,
            policy=policy,
            key_cache=key_cache,
            on_authenticated=self._authenticated,
            configurationForTLS=self.tls,
            direct_tls=options.direct_tls,
            secret_owner=secret_owner(profile.name),
            on_step=self._begin_step,
        )
        factory = ClientFactory(authenticator, self)
        factory.clock = reactor
        super().__init__(factory, reactor=reactor)
        self.logTraffic = False  # never: the stream carries authentication data
        self.state = ConnectionState.DISCONNECTED
        self.error: str | None = None
        self.sasl: SASLResult | None = None
        self.bound_jid: jabber_jid.JID | None = None
        self._connector: IConnector | None = None
        self._first: defer.Deferred | None = None
        self._stopping = False
        self._lost_waiters: list[defer.Deferred] = []
        self._stream_lost_reason: Failure | None = None
        self._ever_connected = False
        #: the step of the connection running, with its deadline
        self._steps = StepTimer(reactor, connect_timeout, step_timeout,
                                self._step_expired)
        #: why the running attempt is being aborted (a step ran out of time)
        self._timeout_error: ConnectionTimeout | None = None
        #: the running attempt's failure was reported (a connector may report twice)
        self._attempt_failed = False
        # flow control (see hold_reading)
        self._reading_held = False
        self._reading_paused = False

    def __repr__(self) -> str:
        return f"<XMPPClient {self.profile.name} {self.state}>"

    # state

    def _set_state(self, state: ConnectionState, error: str | None = None) -> None:
        self.state = state
        self.error = error
        log.info(
            "profile {profile}: {state}{error}", profile=self.profile.name, state=state.value,
            error=f" ({error})" if error else "",
        )
        if self._on_state_change is not None:
            try:
                self._on_state_change(self)
            except Exception:
                # a listener must not stop the connection's own bookkeeping
                log.failure("profile {profile}: connection state listener failed",
                            profile=self.profile.name)

    @property
    def is_connected(self) -> bool:
        return self.state is ConnectionState.CONNECTED

    def info(self) -> dict[str, Any]:
        """What the connection negotiated, for ``li profile info``."""
        sasl = self.sasl
        return {
            "profile": self.profile.name,
            "jid": self.profile.jid,
            "bound_jid": self.bound_jid.full() if self.bound_jid else None,
            "state": self.state.value,
            "error": self.error,
            "sasl_mechanism": sasl.mechanism if sasl else None,
            "channel_binding": sasl.channel_binding if sasl else None,
            "tls_version": sasl.tls_version if sasl else None,
            "downgrade_protection": sasl.downgrade_protection if sasl else None,
        }

    # flow control

    def hold_reading(self, hold: bool) -> None:
        """Stop (``True``) or resume reading what the server sends.

        A handler with a backlog of stanzas to process holds the reading, so that a
        server sending faster than the backend can handle fills the socket buffers
        and the server's queue (TCP flow control), not the backend's memory.  Reading
        goes on while an IQ answer is awaited: handling the backlog may need it.
        """
        self._reading_held = hold
        self._update_reading()

    # sending

    def send(self, obj: Any) -> None:
        """Send a stanza, or queue it until the stream is initialized.

        :raise StanzaNotSerializable: ``obj`` can't be written as XML; it is neither
            sent nor queued, and the stream is unaffected
        """
        if self._initialized:
            self.xmlstream.send(obj)  # the stream checks it (RestrictedXmlStream)
        else:
            # refused now rather than when the stream comes back, in the login path
            serialize_stanza(obj)
            self._packetQueue.append(obj)

    def request(self, request: Request) -> defer.Deferred:
        """Send an IQ request; the Deferred fires with the answer.

        It fails with :class:`StanzaNotSerializable` if the request can't be written
        as XML (nothing is sent), and with what ``toElement`` raised if the request
        can't even be built.

        While a connection attempt is running (the first one, or a reconnection), the
        request waits for it.  It fails with
        :class:`~libervia.backend.core.exceptions.NotConnected` when no attempt runs and
        the stream is down (disconnected, failed, or waiting before the next
        reconnection: nothing is queued), when the attempt it waits for fails, and when
        the connection is lost before the answer.
        """
        if not self._initialized and not self._attempt_running():
            try:
                # a request that could never be sent says so first: it is the
                # caller's to fix, whatever the connection
                serialize_stanza(request.toElement())
            except Exception:
                return defer.fail(Failure())
            return defer.fail(self.not_connected())
        other = self._iqDeferreds.get(request.stanzaID)
        try:
            d = super().request(request)
        except Exception:
            failure = Failure()
            # Wokkel registers the Deferred (and its timeout) before sending
            d = self._iqDeferreds.get(request.stanzaID)
            if d is None or d is other:
                return defer.fail(failure)
            del self._iqDeferreds[request.stanzaID]
            d.errback(failure)
            return d
        self._update_reading()
        d.addBoth(self._answered)
        return d

    def _attempt_running(self) -> bool:
        return self.state is ConnectionState.CONNECTING or self._steps.step is not None

    def _fail_requests(self, reason: str) -> None:
        """Fail the requests waiting for an answer, or for the stream to come up."""
        waiting, self._iqDeferreds = self._iqDeferreds, {}
        if not waiting:
            return
        # those still queued must not go out with a later stream: nobody waits for them
        self._packetQueue = [obj for obj in self._packetQueue
                             if _iq_id(obj) not in waiting]
        error = NotConnected(
            f"profile {self.profile.name!r} is not connected ({reason}): the request was "
            "not answered; try again once it is connected")
        for d in waiting.values():
            d.errback(Failure(error))

    def not_connected(self) -> NotConnected:
        """The error of a request the connection's state does not let through."""
        return NotConnected(
            f"profile {self.profile.name!r} is not connected ({self.state.value}"
            f"{f': {self.error}' if self.error else ''}): connect it first, or try again "
            "once it is connected"
        )

    def _answered(self, result: Any) -> Any:
        self._update_reading()
        return result

    def _update_reading(self) -> None:
        transport = getattr(self.xmlstream, "transport", None)
        pause = self._reading_held and not self._iqDeferreds
        if transport is None or pause == self._reading_paused:
            return
        self._reading_paused = pause
        if pause:
            transport.pauseProducing()
        else:
            transport.resumeProducing()

    # life cycle

    def connect(self) -> defer.Deferred:
        """Connect; fire once the stream is initialized (authenticated, bound).

        Fails with :class:`ConnectionFailed` (or a SASL error) if this first attempt
        fails; once connected, a lost connection is re-established in the background.
        """
        if self._first is not None and not self._first.called:
            return self._chain(self._first)
        if self.state is ConnectionState.CONNECTED:
            return defer.succeed(self)
        self._stopping = False
        self._first = defer.Deferred()
        self.factory.resetDelay()
        self.factory.continueTrying = True
        self._set_state(ConnectionState.CONNECTING)
        self._begin_step(ConnectionStep.TCP)
        self._connector = self._open_connection()
        return self._chain(self._first)

    @staticmethod
    def _chain(d: defer.Deferred) -> defer.Deferred:
        """A new Deferred fired with ``d``'s result, which ``d`` keeps for others."""
        observer: defer.Deferred = defer.Deferred()

        def relay(result: Any) -> Any:
            if isinstance(result, Failure):
                observer.errback(result)
            else:
                observer.callback(result)
            return result

        d.addBoth(relay)
        return observer

    def _open_connection(self) -> IConnector:
        options = self.profile.options
        timeout = self._steps.connect_timeout
        if options.direct_tls:
            host = options.host or self.jid.host
            port = options.port or DEFAULT_DIRECT_TLS_PORT
            return self.reactor.connectSSL(host, port, self.factory, self.tls,
                                           timeout=timeout)
        if options.host:
            return self.reactor.connectTCP(options.host, options.port or DEFAULT_PORT,
                                           self.factory, timeout=timeout)
        connector = XMPPClientConnector(self.reactor, self.jid.host.encode("idna"),
                                        self.factory)
        connector.connect()
        return connector

    def _target(self) -> str:
        """Where the profile connects, for error messages."""
        if self.profile.options.host:
            return self.server()
        return f"the server of {self.jid.host}"

    def server(self) -> str:
        """The server, as ``host:port`` when known, else the JID's domain."""
        options = self.profile.options
        if options.host:
            default = DEFAULT_DIRECT_TLS_PORT if options.direct_tls else DEFAULT_PORT
            return _host_port(options.host, options.port or default)
        transport = getattr(self.xmlstream, "transport", None)
        peer = transport.getPeer() if transport is not None else None
        host, port = getattr(peer, "host", None), getattr(peer, "port", None)
        if host is None:  # through DNS SRV: the server picked, once picked
            host, port = (getattr(self._connector, "host", None),
                          getattr(self._connector, "port", None))
        if isinstance(host, str) and isinstance(port, int):
            return f"{_host_port(host, port)} ({self.jid.host})"
        return self.jid.host

    # time limits of the steps

    def _begin_step(self, step: ConnectionStep) -> None:
        self._steps.begin(step)

    def _step_expired(self, step: ConnectionStep, timeout: float) -> None:
        """A step ran out of time: abort the attempt, which then fails with it."""
        error = ConnectionTimeout(step, self.server(), timeout)
        self._timeout_error = error
        transport = getattr(self.xmlstream, "transport", None)
        if transport is not None:
            # the stream's loss reports the failure (on_connection_lost)
            transport.abortConnection()
            return
        connector = self._connector
        if connector is not None:
            try:
                connector.stopConnecting()
            except net_error.NotConnectingError:
                pass
        if self._timeout_error is not None:
            # the connector did not report it (a DNS look-up still running): do it
            self.factory.clientConnectionFailed(connector, Failure(error))

    def disconnect(self) -> defer.Deferred:
        """Close the connection and stop reconnecting; fire once it is closed."""
        self._stopping = True
        self._steps.stop()
        self.factory.stopTrying()
        if self._first is not None and not self._first.called:
            self._first.errback(ConnectionFailed("connection cancelled"))
            self._first.addErrback(lambda f: None)
        connector, self._connector = self._connector, None
        if self.xmlstream is None:
            if connector is not None:
                connector.disconnect()
            if self.state is not ConnectionState.FAILED:
                self._set_state(ConnectionState.DISCONNECTED)
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._lost_waiters.append(d)
        self.xmlstream.sendFooter()
        # a server that does not close its side in time is cut off
        call = self.reactor.callLater(5, self._force_close)
        d.addBoth(lambda r: (call.cancel() if call.active() else None, r)[1])
        return d

    def _force_close(self) -> None:
        if self.xmlstream is not None and self.xmlstream.transport is not None:
            self.xmlstream.transport.abortConnection()

    # events from the factory and the stream manager

    def _authenticated(self, result: SASLResult) -> None:
        self.sasl = result
        if self._on_authenticated is not None:
            self._on_authenticated(result)

    # Wokkel's stream manager, with each stanza and each handler isolated: one raising
    # must not stop the others, nor leave the stream half initialized (in Wokkel, an
    # exception there ends the stream event silently: the profile would queue every
    # stanza and never be connected again)

    def addHandler(self, handler: Any) -> None:  # noqa: N802 (Wokkel API)
        xmlstream.XMPPHandlerCollection.addHandler(self, handler)
        if self.xmlstream:
            self._call_handler(handler, "makeConnection", self.xmlstream)
        if self._initialized:
            self._call_handler(handler, "connectionInitialized")

    def _call_handler(self, handler: Any, method: str, *args: Any) -> None:
        try:
            getattr(handler, method)(*args)
        except Exception:
            log.failure(
                "profile {profile}: handler {handler} failed in {method}; the stream goes "
                "on without it", profile=self.profile.name,
                handler=type(handler).__qualname__, method=method,
            )

    def _connected(self, xs: xmlstream.XmlStream) -> None:
        self.xmlstream = xs
        # what the server must send next: the stream header (after the TLS handshake
        # with direct TLS), its features after each header, and the header again after
        # each TLS handshake (STARTTLS)
        xs.addObserver(xmlstream.STREAM_START_EVENT,
                       lambda __: self._begin_step(ConnectionStep.STREAM_FEATURES))
        xs.addObserver(TLS_HANDSHAKE_DONE_EVENT,
                       lambda __: self._begin_step(ConnectionStep.STREAM_HEADER))
        self._begin_step(ConnectionStep.TLS_HANDSHAKE if self.profile.options.direct_tls
                         else ConnectionStep.STREAM_HEADER)
        for handler in list(self):
            self._call_handler(handler, "makeConnection", xs)

    def _flush_queue(self, xs: xmlstream.XmlStream) -> None:
        """Send what was queued while the stream was down, dropping what can't go."""
        queue, self._packetQueue = self._packetQueue, []
        for obj in queue:
            try:
                xs.send(obj)
            except StanzaNotSerializable as e:
                # checked when queued, but changed by its sender since: one stanza
                # must not stop the stream coming up
                self._drop(obj, e)
            except Exception as e:  # noqa: BLE001 - whatever writing it raised
                self._drop(obj, StanzaNotSerializable(
                    f"{_stanza_label(obj)} can't be sent ({type(e).__name__}): dropped"))

    def _drop(self, obj: Any, error: StanzaNotSerializable) -> None:
        """A queued stanza can't be sent: fail its request, or say it in the log."""
        stanza_id = _iq_id(obj)
        d = self._iqDeferreds.pop(stanza_id, None) if stanza_id is not None else None
        if d is not None:
            d.errback(Failure(error))
        else:
            log.warn("profile {profile}: queued stanza dropped: {error}",
                     profile=self.profile.name, error=str(error))

    def _authd(self, xs: xmlstream.XmlStream) -> None:
        self._steps.stop()
        self.bound_jid = self.factory.authenticator.jid
        self._ever_connected = True
        self.factory.resetDelay()
        xs.addObserver('/iq[@type="result"]', self._onIQResponse)
        xs.addObserver('/iq[@type="error"]', self._onIQResponse)
        # after every handler (priority -1), whenever they were added
        xs.addObserver('/iq[@type="get"]', self._on_unhandled_request, -1)
        xs.addObserver('/iq[@type="set"]', self._on_unhandled_request, -1)
        self._flush_queue(xs)
        self._initialized = True
        for handler in list(self):
            self._call_handler(handler, "connectionInitialized")
        self._set_state(ConnectionState.CONNECTED)
        first, self._first = self._first, None
        if first is not None and not first.called:
            first.callback(self)

    def _on_unhandled_request(self, iq: domish.Element) -> None:
        """An IQ request no handler took (none set ``handled``): RFC 6120 §8.4 wants
        an answer, ``service-unavailable``, or its sender waits until its time-out.

        As Wokkel's ``FallbackHandler`` does, but on every stream of the client: a
        handler claims a request by setting ``iq.handled`` before it returns, even when
        it answers later.
        """
        if getattr(iq, "handled", False):
            return
        iq.handled = True
        payload = next((c for c in iq.elements()), None)
        log.info("profile {profile}: IQ {type} {namespace} from {sender} has no "
                 "handler: answered service-unavailable", profile=self.profile.name,
                 type=iq.getAttribute("type"),
                 namespace=(payload.uri or "")[:200] if payload is not None else "-",
                 sender=(iq.getAttribute("from") or "the server")[:200])
        # the request's payload is not sent back: a stranger's large request must
        # not make an answer as large
        response = xmlstream.toResponse(iq, "error")
        response.addChild(jabber_error.StanzaError("service-unavailable").getElement())
        try:
            self.send(response)
        except StanzaNotSerializable as e:
            log.info("profile {profile}: can't answer an IQ request: {error}",
                     profile=self.profile.name, error=str(e))

    def initializationFailed(self, reason: Failure) -> None:  # noqa: N802
        """Stream initialization failed: SASL, TLS negotiation, binding..."""
        if self._timeout_error is not None:
            # a step ran out of time: the stream's loss failed what it was waiting for
            reason = Failure(self._timeout_error)
        fatal = not reason.check(sasl_errors.TemporaryAuthFailure)
        self._fail(reason, fatal=fatal)
        if self.xmlstream is not None and self.xmlstream.transport is not None:
            self.xmlstream.transport.loseConnection()

    def _fail(self, reason: Failure, fatal: bool) -> None:
        self._steps.stop()
        message = _describe(reason)
        if reason.check(sasl_errors.SASLError, ConnectionFailed):
            error: BaseException = reason.value
        elif _is_certificate_failure(reason):
            error = CertificateError(self._certificate_message(reason, message))
        elif reason.check(net_error.ConnectError):
            # the server could not be reached at all
            error = ConnectionFailed(
                f"can't connect profile {self.profile.name} to {self._target()}: "
                f"{message.rstrip('.')}; check the profile's host and port, and that "
                "the server is running"
            )
        else:
            error = ConnectionFailed(f"can't connect profile {self.profile.name}: {message}")
        # requests waiting for this attempt: it failed
        self._fail_requests(str(error))
        first = self._first
        if fatal or (first is not None and not first.called):
            self.factory.stopTrying()
            self._stopping = True
            self._set_state(ConnectionState.FAILED, str(error))
            if first is not None and not first.called:
                self._first = None
                first.errback(Failure(error))
                # the callers got it through their own chained Deferreds
                first.addErrback(lambda __: None)
        else:
            self._set_state(ConnectionState.RECONNECTING, str(error))

    def _certificate_message(self, reason: Failure, message: str) -> str:
        domain = self.jid.host
        if type(reason.value).__name__ == "VerificationError":
            # service_identity: a valid certificate, for another name
            return (
                f"the certificate of the server is not valid for {domain}, the domain of "
                f"the profile's JID (it was issued for another name): connection refused; "
                "check the JID, and that nothing intercepts the connection"
            )
        return (
            f"the certificate of {domain} was refused ({message}): if the server uses a "
            "private authority, set the profile's CA file"
        )

    def on_connecting(self, connector: IConnector) -> None:
        """An attempt starts (the first one, or a reconnection)."""
        self._connector = connector
        self._attempt_failed = False
        self._timeout_error = None
        if not self._stopping:
            self._begin_step(ConnectionStep.TCP)

    def on_connection_failed(self, reason: Failure) -> bool:
        """The TCP connection could not be made; return True to retry."""
        self._steps.stop()
        if self._stopping or self._attempt_failed:
            return False
        self._attempt_failed = True
        if self._timeout_error is None and reason.check(net_error.TimeoutError):
            # the reactor's own limit (the same as ours) ran out first
            self._timeout_error = ConnectionTimeout(
                ConnectionStep.TCP, self.server(), self._steps.connect_timeout)
        if self._timeout_error is not None:
            reason, self._timeout_error = Failure(self._timeout_error), None
        self._fail(reason, fatal=_is_certificate_failure(reason))
        return not self._stopping

    def on_connection_lost(self, reason: Failure) -> bool:
        """An established TCP connection was lost; return True to reconnect."""
        waiters, self._lost_waiters = self._lost_waiters, []
        for d in waiters:
            d.callback(None)
        # the TCP connector only knows that TLS aborted the connection; the stream was
        # told why (a certificate refused by service_identity, a TLS alert...)
        stream_reason, self._stream_lost_reason = self._stream_lost_reason, None
        if stream_reason is not None:
            reason = stream_reason
        if self._timeout_error is not None:
            reason, self._timeout_error = Failure(self._timeout_error), None
        if self._stopping:
            if self.state not in (ConnectionState.FAILED, ConnectionState.DISCONNECTED):
                self._set_state(ConnectionState.DISCONNECTED)
            return False
        if (not self._ever_connected or _is_certificate_failure(reason)
                or reason.check(RestrictedXMLError)):
            # lost before the stream was ever up (TLS handshake refused...), or a
            # server that would only send forbidden XML again
            self._fail(reason, fatal=True)
            return False
        self._fail(reason, fatal=False)
        return True

    def _disconnected(self, reason: Failure) -> None:
        self._steps.stop()
        if self._timeout_error is not None:
            reason = Failure(self._timeout_error)
        self._stream_lost_reason = reason
        # the next stream has a transport of its own, reading
        self._reading_paused = False
        self.xmlstream = None
        self._initialized = False
        for handler in list(self):
            self._call_handler(handler, "connectionLost", reason)
        # requests without an answer fail now, not at their time-out
        self._fail_requests(f"connection lost: {_describe(reason)}")
        if self.state is ConnectionState.CONNECTED and not self._stopping:
            # a deliberate stop (disconnect, backend stopping) is no reconnection
            self._set_state(ConnectionState.RECONNECTING, _describe(reason))
            # the factory decides through on_connection_lost

