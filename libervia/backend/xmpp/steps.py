"""The steps of a connection, each bounded in time.

A connection goes through steps, each waiting for the server: the TCP connection (with
the DNS SRV look-up when the profile names no host), the TLS handshake (first with
direct TLS, after ``<proceed/>`` with STARTTLS), the server's stream header, its stream
features, STARTTLS, SASL, resource binding and session establishment (the header and
features come again after TLS and after SASL).  A server that accepts the TCP
connection and then says nothing would otherwise hold a profile ``connecting`` for
ever: :class:`StepTimer` gives each step ``[xmpp] connect_timeout`` (TCP) or ``[xmpp]
step_timeout`` (every other step) seconds, and calls back with the step that ran out.

The connection tells the timer where it is: :meth:`StepTimer.begin` when a step starts,
:meth:`StepTimer.stop` once the stream is ready or the attempt is over.
:func:`watch_initializers` reports the steps of the stream initializers (STARTTLS,
SASL, binding, session) as Twisted's authenticator runs them.
"""

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.words.protocols.jabber import client as jabber_client
from twisted.words.protocols.jabber import sasl, xmlstream

from libervia.backend.core.config import declare, parse_float
from libervia.backend.core.interfaces import Reactor

SECTION = "xmpp"
#: stream event dispatched by the client's stream once a TLS handshake completed
TLS_HANDSHAKE_DONE_EVENT = "//event/libervia/tls-handshake-done"


def _positive_seconds(value: str) -> float:
    number = parse_float(value)
    if not number > 0:
        raise ValueError("expected a positive number of seconds")
    return number


DEFAULT_CONNECT_TIMEOUT = 20.0
DEFAULT_STEP_TIMEOUT = 20.0

declare(
    SECTION, "connect_timeout", _positive_seconds, DEFAULT_CONNECT_TIMEOUT,
    "Seconds to open the TCP connection to the XMPP server (DNS SRV look-up included); "
    "past that the attempt fails with an error naming the server.",
)
declare(
    SECTION, "step_timeout", _positive_seconds, DEFAULT_STEP_TIMEOUT,
    "Seconds the XMPP server may take for each later step of a connection: TLS "
    "handshake, stream header, stream features, STARTTLS, SASL authentication, "
    "resource binding, session establishment. Past that the attempt is aborted with "
    "an error naming the step and the server, and the profile is ``failed`` (first "
    "attempt) or ``reconnecting`` (after a lost connection). Keep it below ``li``'s "
    "``--timeout`` (60 s by default) so that ``li profile connect`` gets the server's "
    "error rather than its own.",
)


class ConnectionStep(StrEnum):
    """A step of a connection where the server must answer; the value names it in
    messages ("did not answer during the stream header")."""

    TCP = "the TCP connection"
    TLS_HANDSHAKE = "the TLS handshake"
    STREAM_HEADER = "the stream header"
    STREAM_FEATURES = "the stream features"
    STARTTLS = "STARTTLS"
    SASL = "SASL authentication"
    BIND = "resource binding"
    SESSION = "session establishment"

    @property
    def setting(self) -> str:
        """The configuration key bounding this step."""
        return "connect_timeout" if self is ConnectionStep.TCP else "step_timeout"


class StepTimer:
    """One running step of a connection, and its deadline.

    :param reactor: gives the time (tests use a ``Clock``)
    :param connect_timeout: seconds allowed to the TCP step
    :param step_timeout: seconds allowed to each other step
    :param on_expired: called with the step and its time-out when a step runs out
    """

    def __init__(
        self,
        reactor: Reactor,
        connect_timeout: float,
        step_timeout: float,
        on_expired: Callable[[ConnectionStep, float], None],
    ) -> None:
        self.reactor = reactor
        self.connect_timeout = connect_timeout
        self.step_timeout = step_timeout
        self.on_expired = on_expired
        #: the step running, ``None`` between attempts and once connected
        self.step: ConnectionStep | None = None
        self._call: IDelayedCall | None = None

    def timeout(self, step: ConnectionStep) -> float:
        return self.connect_timeout if step is ConnectionStep.TCP else self.step_timeout

    def begin(self, step: ConnectionStep) -> None:
        """``step`` starts now: the previous one is over, the deadline is ``step``'s."""
        self._cancel()
        self.step = step
        timeout = self.timeout(step)
        self._call = self.reactor.callLater(timeout, self._expired, step, timeout)

    def stop(self) -> None:
        """No step runs any more (connected, failed, or disconnected)."""
        self._cancel()
        self.step = None

    def _cancel(self) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _expired(self, step: ConnectionStep, timeout: float) -> None:
        self._call = None
        self.step = None
        self.on_expired(step, timeout)


#: the initializers of a client stream, and the step each one is
_INITIALIZER_STEPS: tuple[tuple[type, ConnectionStep], ...] = (
    (xmlstream.TLSInitiatingInitializer, ConnectionStep.STARTTLS),
    (sasl.SASLInitiatingInitializer, ConnectionStep.SASL),
    (jabber_client.BindInitializer, ConnectionStep.BIND),
    (jabber_client.SessionInitializer, ConnectionStep.SESSION),
)


def watch_initializers(xs: xmlstream.XmlStream,
                       on_step: Callable[[ConnectionStep], None]) -> None:
    """Have ``on_step`` told when each initializer of ``xs`` starts.

    An initializer resetting the stream (STARTTLS, SASL) is followed by a new stream
    header: the TLS handshake first after STARTTLS.  Initializers of other kinds
    (the version check) take no time of the server's and are left alone.
    """
    for initializer in xs.initializers:
        step = next((s for kind, s in _INITIALIZER_STEPS if isinstance(initializer, kind)),
                    None)
        if step is not None:
            initializer.initialize = _watched(initializer.initialize, step, on_step)


def _watched(initialize: Callable[[], Any], step: ConnectionStep,
             on_step: Callable[[ConnectionStep], None]) -> Callable[[], defer.Deferred]:
    after_reset = (ConnectionStep.TLS_HANDSHAKE if step is ConnectionStep.STARTTLS
                   else ConnectionStep.STREAM_HEADER)

    def reset(result: Any) -> Any:
        if result is xmlstream.Reset:
            on_step(after_reset)
        return result

    def watched() -> defer.Deferred:
        on_step(step)
        return defer.maybeDeferred(initialize).addCallback(reset)

    return watched
