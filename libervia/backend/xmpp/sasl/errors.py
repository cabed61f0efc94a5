"""Errors raised while authenticating with SASL.

Every error derives from :class:`SASLError`, whose :attr:`~SASLError.retry` attribute
tells the reconnection logic whether trying again later can help: a wrong password or a
server failing a security check will fail the same way next time, so the connection must
not loop on them.

Messages never contain a secret (password, salted password, keys, proofs): at most the
name of the mechanism, an error code chosen by the server (sanitised), or a count.
"""

from libervia.backend.core.exceptions import BackendError

#: longest server-provided text kept in an error message
_MAX_SERVER_TEXT = 200


def sanitize_server_text(text: str | bytes | None) -> str:
    """Make a server-provided string safe to show in a message or a log line.

    Only printable ASCII is kept, so that a hostile server can neither inject control
    characters in the logs nor send megabytes of text.
    """
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    clean = "".join(c if " " <= c <= "~" else "?" for c in text[:_MAX_SERVER_TEXT])
    if len(text) > _MAX_SERVER_TEXT:
        clean += "..."
    return clean


class SASLError(BackendError):
    """Base class of the authentication errors.

    :ivar retry: ``True`` when a new attempt later may succeed (temporary server failure),
        ``False`` when it would fail the same way (wrong credentials, security check).
    """

    retry: bool = False


class NoAcceptableMechanism(SASLError):
    """No mechanism offered by the server is allowed by the client's policy."""


class UnusableCredentials(SASLError):
    """The user name or password can't be prepared (RFC 8265 forbids some characters)."""


class AuthenticationFailed(SASLError):
    """The server refused the authentication (``<failure/>``).

    :ivar condition: the RFC 6120 condition name (``not-authorized``...), or ``None``.
    :ivar text: the sanitised ``<text/>`` the server attached, or ``""``.
    """

    def __init__(self, message: str, condition: str | None = None, text: str = "") -> None:
        super().__init__(message)
        self.condition = condition
        self.text = text


class InvalidCredentials(AuthenticationFailed):
    """Wrong password or unknown user: retrying with the same credentials is useless."""


class AccountDisabled(AuthenticationFailed):
    """The account is disabled on the server."""


class CredentialsExpired(AuthenticationFailed):
    """The password expired and must be changed with another client or by the admin."""


class TemporaryAuthFailure(AuthenticationFailed):
    """The server could not authenticate now; a later attempt may work."""

    retry = True


class AuthenticationAborted(AuthenticationFailed):
    """The exchange was aborted (by the client after a failed check, or by the server)."""


class EncryptionRequired(AuthenticationFailed):
    """The server requires an encrypted connection for this mechanism."""


class MechanismRejected(AuthenticationFailed):
    """The server rejected the mechanism it had offered (invalid or too weak)."""


class SASLProtocolError(AuthenticationFailed):
    """The server reported a protocol error in what we sent (malformed, bad encoding...)."""


class ScramError(SASLError):
    """Base class of the failures detected by the client during a SCRAM exchange.

    Any server message that can't be trusted ends in a subclass of this error, never in
    an unrelated exception.
    """


class MalformedServerMessage(ScramError):
    """A server message does not follow the SCRAM (or SASL) syntax."""


class UnsupportedExtension(ScramError):
    """The server requires a mandatory SCRAM extension (``m=``) that we don't know."""


class NonceMismatch(ScramError):
    """The server nonce does not extend ours: replayed or forged message."""


class InsufficientIterations(ScramError):
    """The server asked for fewer PBKDF2 iterations than the configured floor.

    A low count makes an offline attack on a captured exchange cheap; if the server is
    really configured this way, its admin must raise it (or the profile lower the floor).
    """


class ServerSignatureMismatch(ScramError):
    """The server could not prove it knows the password: it is not the real server."""


class ServerSignatureMissing(ScramError):
    """The server declared success without sending its signature."""


class DowngradeDetected(ScramError):
    """The mechanism or channel-binding lists were tampered with (XEP-0474 / XEP-0440)."""


class ChannelBindingError(ScramError):
    """Channel binding data could not be obtained, or the server refused it."""


class ScramServerError(ScramError):
    """The server reported a SCRAM error (``e=``).

    :ivar code: the sanitised error value sent by the server.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class ScramInvalidCredentials(ScramServerError, InvalidCredentials):
    """The server reported ``e=invalid-proof`` or ``e=unknown-user``."""

    def __init__(self, message: str, code: str) -> None:
        ScramServerError.__init__(self, message, code)
        self.condition = "not-authorized"
        self.text = ""
