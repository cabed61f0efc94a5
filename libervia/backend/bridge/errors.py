"""How errors cross the bridge.

Every error answer carries a JSON-RPC ``code``, a ``message`` meant for a person, and
``data.type``, the name of the exception class, which frontends use to tell errors apart
(``NotFound``, ``ConflictError``...).  The codes of the backend's own exceptions are in
the "server error" range JSON-RPC reserves for implementations (-32000 to -32099); an
exception class without a registered code takes the code of its nearest registered base
class, so a plugin's ``class NoSuchNode(NotFound)`` answers -32001 with
``data.type = "NoSuchNode"``.

Anything that is not a :class:`~libervia.backend.core.exceptions.BackendError` is a bug:
it is logged with its traceback and the frontend only gets a generic internal error, so
that no traceback, path or secret leaks to the client.
"""

from typing import Any

from libervia.backend.core import exceptions as exc
from libervia.backend.core.log import redact

# codes defined by JSON-RPC 2.0
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# codes of the backend (JSON-RPC "server error" range)
BACKEND_ERROR = -32000
NOT_FOUND = -32001
CONFLICT = -32002
CONFIG_ERROR = -32003
PLUGIN_ERROR = -32004
NOT_CONNECTED = -32005
FRAME_TOO_LARGE = -32010
TOO_MANY_CLIENTS = -32011


class BridgeError(exc.BackendError):
    """Base of the errors raised by the bridge itself."""


class InvalidParams(BridgeError):
    """The parameters of a call are missing, unknown or of the wrong type.

    Methods raise it (with a message naming the parameter) for values they refuse.
    """


class MethodNotFound(BridgeError):
    """No method of this name is registered."""


class InvalidRequest(BridgeError):
    """The message is valid JSON but not a valid JSON-RPC 2.0 request."""


class ParseError(BridgeError):
    """The message is not valid UTF-8 JSON."""


class FrameTooLarge(BridgeError):
    """The message is longer than ``[bridge] max_frame_size``."""


class TooManyClients(BridgeError):
    """The backend already serves ``[bridge] max_clients`` connections."""


#: exception class -> JSON-RPC code; looked up along the MRO
_CODES: dict[type[BaseException], int] = {
    exc.BackendError: BACKEND_ERROR,
    exc.NotFound: NOT_FOUND,
    exc.ConflictError: CONFLICT,
    exc.ConfigError: CONFIG_ERROR,
    exc.PluginError: PLUGIN_ERROR,
    exc.NotConnected: NOT_CONNECTED,
    ParseError: PARSE_ERROR,
    InvalidRequest: INVALID_REQUEST,
    MethodNotFound: METHOD_NOT_FOUND,
    InvalidParams: INVALID_PARAMS,
    FrameTooLarge: FRAME_TOO_LARGE,
    TooManyClients: TOO_MANY_CLIENTS,
}

INTERNAL_ERROR_MESSAGE = "internal error of the backend (details are in its log)"


def register_error(exc_class: type[exc.BackendError], code: int) -> None:
    """Give ``exc_class`` (and its subclasses without a code of their own) a code.

    :param code: in the server error range -32000 to -32099; -32000 to -32049 are
        the backend's core, plugins should pick from -32050 to -32099
    :raise ValueError: ``code`` out of the range, or ``exc_class`` not a BackendError
    """
    if not (isinstance(exc_class, type) and issubclass(exc_class, exc.BackendError)):
        raise ValueError(f"{exc_class!r} is not a subclass of BackendError")
    if not -32099 <= code <= -32000:
        raise ValueError(f"error code {code} is outside the server range -32099..-32000")
    _CODES[exc_class] = code


def code_for(error: BaseException) -> int | None:
    """JSON-RPC code of ``error``, or ``None`` if it is not a backend error."""
    for klass in type(error).__mro__:
        code = _CODES.get(klass)
        if code is not None:
            return code
    return None


def error_object(error: BaseException) -> dict[str, Any]:
    """The JSON-RPC ``error`` member for ``error``.

    Backend errors give their class name and message (with registered secrets
    redacted); anything else gives a generic internal error.
    """
    code = code_for(error)
    if code is None:
        return {
            "code": INTERNAL_ERROR,
            "message": INTERNAL_ERROR_MESSAGE,
            "data": {"type": "InternalError"},
        }
    message = redact(str(error)) or type(error).__name__
    return {"code": code, "message": message, "data": {"type": type(error).__name__}}
