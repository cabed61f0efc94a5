"""The text of SCRAM messages (RFC 5802 section 7), without state.

SASLprep of the credentials, escaping of names, strict base64, and the parsing of the
server's ``x=value`` attributes, ``e=`` errors included.  Every parser raises only
:class:`~libervia.backend.xmpp.sasl.errors.ScramError` subclasses, with messages that
never quote a secret.  :mod:`~libervia.backend.xmpp.sasl.scram` builds the exchange on
them.
"""

import base64
import binascii

import precis_i18n

from libervia.backend.xmpp.sasl import errors

#: RFC 8265 OpaqueString, the PRECIS successor of SASLprep (RFC 4013)
_OPAQUE_STRING = precis_i18n.get_profile("OpaqueString")


def saslprep(value: str, what: str = "password") -> str:
    """Prepare a user name or password with the RFC 8265 OpaqueString profile.

    :param what: name of the value, for the error message (the value itself never
        appears in it)
    :raises errors.UnusableCredentials: the value is empty or has forbidden characters
    """
    if not isinstance(value, str):
        raise errors.UnusableCredentials(f"the {what} must be text")
    if value and value.isascii() and value.isprintable():
        # printable ASCII is left as is by every OpaqueString rule; the PRECIS
        # enforcement costs more than a tenth of a 4096-iteration PBKDF2
        return value
    try:
        return _OPAQUE_STRING.enforce(value)
    except (UnicodeError, ValueError):
        # the codec error quotes the value: don't chain it
        raise errors.UnusableCredentials(
            f"the {what} is empty or contains characters that SASLprep (RFC 8265 "
            "OpaqueString) forbids, such as control characters; change it"
        ) from None


def escape_saslname(name: str) -> str:
    """Escape ``=`` and ``,`` in a SCRAM user or authorisation name (RFC 5802 5.1)."""
    return name.replace("=", "=3D").replace(",", "=2C")


def b64decode_strict(text: str | bytes, what: str) -> bytes:
    """Decode base64, refusing anything but the canonical encoding.

    :raises errors.MalformedServerMessage: ``text`` is not valid base64
    """
    try:
        if isinstance(text, str):
            text = text.encode("ascii")
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise errors.MalformedServerMessage(f"{what} is not valid base64") from None
    # only one encoding per value: unused bits set would be a covert channel
    if base64.b64encode(decoded) != text:
        raise errors.MalformedServerMessage(f"{what} is not canonical base64")
    return decoded


def b64encode(data: bytes) -> str:
    """Standard base64 of ``data``, as text."""
    return base64.b64encode(data).decode("ascii")


def is_nonce(text: str) -> bool:
    """A valid SCRAM nonce: printable ASCII without space or comma."""
    # printable = %x21-2B / %x2D-7E (RFC 5802): printable ASCII except space and ','
    # (string methods: a check per character costs as much as the rest of the parsing)
    return text.isascii() and text.isprintable() and " " not in text and "," not in text


def decode_message(data: bytes, what: str) -> str:
    """The text of a server message: UTF-8 without NUL.

    :raises errors.MalformedServerMessage: not bytes, not UTF-8, or with a NUL
    """
    if not isinstance(data, bytes | bytearray):
        raise errors.MalformedServerMessage(f"{what} is not bytes")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise errors.MalformedServerMessage(f"{what} is not valid UTF-8") from None
    if "\x00" in text:
        raise errors.MalformedServerMessage(f"{what} contains a NUL character")
    return text


def parse_attributes(text: str, what: str) -> list[tuple[str, str]]:
    """Split ``a=value,b=value`` into pairs, refusing duplicates and empty values."""
    if not text:
        raise errors.MalformedServerMessage(f"{what} is empty")
    attributes = []
    seen = set()
    for part in text.split(","):
        if len(part) < 3 or part[1] != "=" or not (part[0].isascii() and part[0].isalpha()):
            raise errors.MalformedServerMessage(
                f"{what} has an item not of the form 'x=value'"
            )
        name = part[0]
        if name in seen:
            raise errors.MalformedServerMessage(f"{what} repeats the {name!r} attribute")
        seen.add(name)
        attributes.append((name, part[2:]))
    return attributes


def parse_iterations(text: str, maximum: int) -> int:
    """The iteration count of server-first, a positive number up to ``maximum``."""
    # posit-number = %x31-39 *DIGIT; the length check keeps int() cheap
    if not (text.isascii() and text.isdigit()) or text[0] == "0":
        raise errors.MalformedServerMessage("the iteration count is not a positive number")
    if len(text) > len(str(maximum)) or int(text) > maximum:
        raise errors.MalformedServerMessage(
            f"the iteration count is absurdly high (more than {maximum}): refusing to "
            "spend minutes computing keys"
        )
    return int(text)


_SERVER_ERRORS_CREDENTIALS = {"invalid-proof", "unknown-user"}
_SERVER_ERRORS_CHANNEL_BINDING = {
    "channel-bindings-dont-match",
    "server-does-support-channel-binding",
    "channel-binding-not-supported",
    "unsupported-channel-binding-type",
}


def server_attributes(text: str, what: str) -> list[tuple[str, str]]:
    """Attributes of a server message, raising for ``e=`` and for a mandatory ``m=``."""
    attributes = parse_attributes(text, what)
    if attributes[0][0] == "e":
        _raise_server_error(attributes[0][1])
    if any(name == "m" for name, _ in attributes):
        raise errors.UnsupportedExtension(
            "the server requires a SCRAM extension (m=) we don't support"
        )
    return attributes


def _raise_server_error(value: str) -> None:
    code = errors.sanitize_server_text(value)
    if code in _SERVER_ERRORS_CREDENTIALS:
        raise errors.ScramInvalidCredentials(
            "wrong password or unknown user (the server said: " + code + "); check the "
            "profile's credentials",
            code,
        )
    if code in _SERVER_ERRORS_CHANNEL_BINDING:
        raise errors.ChannelBindingError(
            f"the server refused our channel binding ({code}): the TLS connection may be "
            "intercepted, or the server misconfigured"
        )
    raise errors.ScramServerError(f"the server reported a SCRAM error: {code}", code)
