"""Wire protocol of the bridge: JSON-RPC 2.0, one compact JSON document per line.

Each message, in both directions, is a UTF-8 JSON object followed by ``\\n`` (JSON
escapes new lines inside strings, so a compact document never contains one).  A frame
longer than the limit, or bytes piling up without a new line, get a ``FrameTooLarge``
error and the connection is closed: the stream can't be trusted after that.  Any other
bad message (invalid UTF-8 or JSON, not an object, batch, bad member) gets an error
answer and the connection goes on with the next line.

Outgoing data is bounded per client: when the client does not read, Twisted pauses this
protocol (it is registered as the transport's producer); what is written meanwhile is
queued, and once the queue exceeds the limit the connection is aborted, so a stuck
frontend costs a bounded amount of memory and never blocks the backend.
"""

import json
import math
from collections import deque
from typing import Any, Protocol

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from libervia.backend.bridge import errors
from libervia.backend.core.log import getLogger

log = getLogger(__name__)

DEFAULT_MAX_FRAME_SIZE = 1024 * 1024
DEFAULT_MAX_BUFFER = 16 * 1024 * 1024
DEFAULT_MAX_CLIENTS = 256

#: every signal (``subscribe`` without names)
ALL_SIGNALS = "*"


class MethodCaller(Protocol):
    """What a connection needs of the bridge: calling a method by name
    (:class:`~libervia.backend.bridge.server.Bridge` is one)."""

    def call(self, name: str, params: dict[str, Any],
             connection: "BridgeProtocol | None" = None) -> defer.Deferred:
        """Call method ``name`` with ``params``; a Deferred of its result."""


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are accepted by Python's json but are not JSON
    raise ValueError(f"{name} is not valid JSON")


def decode(frame: bytes) -> Any:
    """Parse one frame.

    :raise errors.ParseError: not UTF-8, not JSON, nested too deeply...
    """
    try:
        text = frame.decode("utf-8")
        return json.loads(text, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise errors.ParseError("the message is not valid UTF-8") from None
    except RecursionError:
        raise errors.ParseError("the message is nested too deeply") from None
    except ValueError as e:
        raise errors.ParseError(f"the message is not valid JSON: {e}") from None


def encode(message: Any) -> bytes:
    """Serialise ``message`` as one frame (new line included).

    :raise TypeError, ValueError: ``message`` holds something JSON can't represent
    """
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        # lone surrogates (possible in strings decoded from a client) can't be UTF-8:
        # escape them so that the frame stays valid JSON and valid UTF-8
        data = json.dumps(message, separators=(",", ":"), allow_nan=False).encode("ascii")
    return data + b"\n"


def error_response(request_id: Any, error: BaseException) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": errors.error_object(error), "id": request_id}


def _valid_id(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)  # 1e999 parses as infinity, which JSON can't carry
    return value is None or (isinstance(value, (str, int)) and not isinstance(value, bool))


def parse_request(message: Any) -> tuple[str, dict[str, Any], Any, bool]:
    """Check a decoded message is a JSON-RPC 2.0 request.

    :return: (method, params, id, is_notification)
    :raise errors.InvalidRequest, errors.InvalidParams: with the id to answer when known
    """
    if isinstance(message, list):
        raise errors.InvalidRequest(
            "batch requests are not supported: send one request per line"
        )
    if not isinstance(message, dict):
        raise errors.InvalidRequest("a request must be a JSON object")
    if message.get("jsonrpc") != "2.0":
        raise errors.InvalidRequest('a request must have "jsonrpc": "2.0"')
    method = message.get("method")
    if not isinstance(method, str) or not method:
        raise errors.InvalidRequest('a request must have a "method" string')
    if "id" in message and not _valid_id(message["id"]):
        raise errors.InvalidRequest('"id" must be a string, a number or null')
    params = message.get("params", {})
    if not isinstance(params, dict):
        raise errors.InvalidParams(
            '"params" must be an object: parameters are passed by name'
        )
    return method, params, message.get("id"), "id" not in message


@implementer(IPushProducer)
class BridgeProtocol(protocol.Protocol):
    """One frontend connection."""

    factory: "BridgeFactory"

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._paused = False
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._closing = False
        #: names of the signals this client gets, or ALL_SIGNALS
        self.subscriptions: set[str] | str = set()

    @property
    def bridge(self) -> MethodCaller:
        return self.factory.bridge

    # connection life

    def connectionMade(self) -> None:  # noqa: N802 (Twisted API)
        self.transport.registerProducer(self, True)
        if len(self.factory.connections) >= self.factory.max_clients:
            log.warn(
                "bridge: refusing a client, {count} are already connected "
                "([bridge] max_clients)", count=len(self.factory.connections),
            )
            self.send(error_response(None, errors.TooManyClients(
                "too many frontends are connected to the backend; close some and retry"
            )))
            self.close()
            return
        self.factory.connections.add(self)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        self._closing = True
        self._queue.clear()
        self._queued_bytes = 0
        self._buffer.clear()
        self.factory.connections.discard(self)

    def close(self) -> None:
        """Close after what is already written (not what is queued) is sent."""
        self._closing = True
        self.transport.loseConnection()

    def abort(self) -> None:
        """Close at once, dropping whatever is not sent yet."""
        self._closing = True
        self._queue.clear()
        self._queued_bytes = 0
        self.transport.abortConnection()

    # incoming

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted API)
        if self._closing:
            return
        self._buffer += data
        max_size = self.factory.max_frame_size
        while not self._closing:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > max_size:
                    self._frame_too_large()
                return
            if end > max_size:
                self._frame_too_large()
                return
            frame = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._frame_received(frame.rstrip(b"\r"))

    def _frame_too_large(self) -> None:
        log.warn("bridge: a client sent a frame over {max} bytes, disconnecting it",
                 max=self.factory.max_frame_size)
        self._buffer.clear()
        self.send(error_response(None, errors.FrameTooLarge(
            f"message longer than {self.factory.max_frame_size} bytes; the connection "
            "is closed"
        )))
        self.close()

    def _frame_received(self, frame: bytes) -> None:
        if not frame.strip():
            return  # blank lines are allowed (keep-alive)
        request_id = None
        try:
            message = decode(frame)
            if isinstance(message, dict) and _valid_id(message.get("id")):
                request_id = message.get("id")
            method, params, request_id, notification = parse_request(message)
        except errors.BridgeError as e:
            self.send(error_response(request_id, e))
            return
        d = self.bridge.call(method, params, connection=self)
        if notification:
            d.addErrback(self._notification_failed, method)
        else:
            d.addCallbacks(self._send_result, self._send_error,
                           callbackArgs=(method, request_id),
                           errbackArgs=(method, request_id))

    def _send_result(self, result: Any, method: str, request_id: Any) -> None:
        try:
            frame = encode({"jsonrpc": "2.0", "result": result, "id": request_id})
        except (TypeError, ValueError):
            log.failure("bridge: method {method} returned a value JSON can't represent",
                        method=method)
            frame = encode(error_response(request_id, RuntimeError()))
        self.write_frame(frame)

    def _send_error(self, failure: Failure, method: str, request_id: Any) -> None:
        self._log_failure(failure, method)
        self.send(error_response(request_id, failure.value))

    def _notification_failed(self, failure: Failure, method: str) -> None:
        self._log_failure(failure, method)

    @staticmethod
    def _log_failure(failure: Failure, method: str) -> None:
        if errors.code_for(failure.value) is None:
            log.failure("bridge: method {method} failed", failure, method=method)
        else:
            log.debug("bridge: method {method} answered an error: {error}",
                      method=method, error=failure.getErrorMessage())

    # outgoing

    def send(self, message: Any) -> None:
        """Send a JSON-serialisable message."""
        self.write_frame(encode(message))

    def write_frame(self, frame: bytes) -> None:
        """Write an encoded frame, queueing it while the client does not read."""
        if self._closing or not self.connected:
            return
        if not self._paused:
            self.transport.write(frame)
            return
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        if self._queued_bytes > self.factory.max_buffer:
            log.warn(
                "bridge: a client does not read what it is sent ({size} bytes waiting, "
                "[bridge] max_buffer), disconnecting it", size=self._queued_bytes,
            )
            self.abort()

    # IPushProducer: called by the transport when its buffer fills up or drains

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted API)
        self._paused = True

    def resumeProducing(self) -> None:  # noqa: N802 (Twisted API)
        self._paused = False
        while self._queue and not self._paused:
            frame = self._queue.popleft()
            self._queued_bytes -= len(frame)
            self.transport.write(frame)

    def stopProducing(self) -> None:  # noqa: N802 (Twisted API)
        self._closing = True
        self._queue.clear()
        self._queued_bytes = 0

    # signals

    def wants(self, signal: str) -> bool:
        """Tell whether this client subscribed to ``signal``."""
        return self.subscriptions == ALL_SIGNALS or signal in self.subscriptions


class BridgeFactory(protocol.Factory):
    """Creates a :class:`BridgeProtocol` per frontend and keeps the live ones.

    :param bridge: dispatches the calls
    :param max_frame_size: longest frame accepted, in bytes
    :param max_buffer: bytes queued for a client not reading before it is dropped
    :param max_clients: connections served at once
    """

    protocol = BridgeProtocol
    noisy = False

    def __init__(
        self,
        bridge: MethodCaller,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        max_clients: int = DEFAULT_MAX_CLIENTS,
    ) -> None:
        self.bridge = bridge
        self.max_frame_size = max_frame_size
        self.max_buffer = max_buffer
        self.max_clients = max_clients
        self.connections: set[BridgeProtocol] = set()

    def disconnect_all(self) -> None:
        """Close every connection (used when the backend stops)."""
        for connection in list(self.connections):
            connection.close()
