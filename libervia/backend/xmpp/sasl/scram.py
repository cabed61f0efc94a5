"""SCRAM client (RFC 5802, RFC 7677), without I/O.

:class:`ScramClient` is a state machine: it produces the client messages and checks
the server ones, as bytes, and knows nothing about XMPP, Twisted or sockets.  The
:mod:`~libervia.backend.xmpp.sasl.initializer` module drives it from an XML stream.

The exchange, and what is checked at each step::

    client-first  = gs2-header "n=" user ",r=" client-nonce
    server-first  = "r=" nonce ",s=" salt ",i=" iterations [",h=" ssdp-hash] ...
        ("d=" instead of "h=" for servers following XEP-0474 before 0.4)
        nonce extends the client nonce; no "m="; iterations within the floor and ceiling;
        XEP-0474 hash equal to the one computed from what the server advertised
    client-final  = "c=" base64(gs2-header + cb-data) ",r=" nonce ",p=" proof
    server-final  = "v=" signature | "e=" error
        signature compared in constant time with the one expected from ServerKey

Key derivation (PBKDF2, the only slow step) is a separate call,
:meth:`ScramClient.derive_keys`, so a caller can run it in a thread; it is skipped
entirely when a :class:`~.scram_keys.ScramKeyCache` already holds the keys for the
server's (hash, salt, iteration count).

The parts of the exchange live in modules of their own: the hashes, key derivation and
key cache in :mod:`~libervia.backend.xmpp.sasl.scram_keys`, the text rules and parsers
of the messages in :mod:`~libervia.backend.xmpp.sasl.scram_messages`; this module is
the state machine and XEP-0474 downgrade protection.
"""

import hashlib
import hmac
import secrets
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import Enum

from libervia.backend.core.log import getLogger, register_secret
from libervia.backend.xmpp.sasl import errors
from libervia.backend.xmpp.sasl.scram_keys import (
    KDF,
    KeyCacheEntry,
    ScramHash,
    ScramKeyCache,
    ScramKeys,
    derive_keys,
    parse_mechanism,
)
from libervia.backend.xmpp.sasl.scram_messages import (
    b64decode_strict,
    b64encode,
    decode_message,
    escape_saslname,
    is_nonce,
    parse_iterations,
    saslprep,
    server_attributes,
)

log = getLogger(__name__)

#: default lowest iteration count accepted (RFC 5802 and RFC 7677 recommend 4096 at least)
DEFAULT_MIN_ITERATIONS = 4096
#: default highest iteration count accepted: beyond, PBKDF2 takes minutes, which a
#: hostile server could use to freeze the client
DEFAULT_MAX_ITERATIONS = 10_000_000
#: attribute of server-first carrying the XEP-0474 (SSDP) hash, since version 0.4
SSDP_ATTRIBUTE = "h"
#: attribute of the versions before 0.4, still sent by deployed servers
SSDP_LEGACY_ATTRIBUTE = "d"
#: XEP-0474 separators (item, list), invalid in XML so that no name can contain them
_SSDP_SEPARATORS = ("\x1e", "\x1f")
#: separators of the versions before 0.4
_SSDP_LEGACY_SEPARATORS = (",", "|")

_NONCE_BYTES = 24


@dataclass(frozen=True)
class ServerAdvertisement:
    """What the server advertised before authentication, for XEP-0474.

    :ivar mechanisms: every SASL mechanism of the ``<mechanisms/>`` feature
    :ivar channel_bindings: the XEP-0440 channel-binding types, or ``None`` when the
        server did not send the ``<sasl-channel-binding/>`` feature
    """

    mechanisms: tuple[str, ...]
    channel_bindings: tuple[str, ...] | None = None

    def ssdp_string(self, legacy: bool = False) -> bytes:
        """The string XEP-0474 hashes (sorted with the i;octet collation).

        :param legacy: use the separators of the versions before 0.4 (``,`` and ``|``)
            that go with the ``d`` attribute
        """
        item, between = _SSDP_LEGACY_SEPARATORS if legacy else _SSDP_SEPARATORS
        text = item.join(sorted(self.mechanisms, key=_octets))
        if self.channel_bindings is not None:
            text += between + item.join(sorted(self.channel_bindings, key=_octets))
        return text.encode()

    def ssdp_hash(self, scram_hash: ScramHash, legacy: bool = False) -> bytes:
        """The XEP-0474 digest expected from a server using ``scram_hash``."""
        return scram_hash.hash(self.ssdp_string(legacy))


def _octets(text: str) -> bytes:
    return text.encode()


class _State(Enum):
    INITIAL = "initial"
    FIRST_SENT = "waiting for server-first"
    KEYS_NEEDED = "waiting for key derivation"
    READY = "ready to send client-final"
    FINAL_SENT = "waiting for server-final"
    DONE = "done"
    FAILED = "failed"


def _valid_gs2_flag(flag: str) -> bool:
    return flag in ("n", "y", "p")


@dataclass
class _ServerFirst:
    nonce: str
    salt: bytes
    iterations: int
    extensions: dict[str, str] = field(default_factory=dict)


class ScramClient:
    """Client side of one SCRAM exchange.

    Typical use::

        client = ScramClient("SCRAM-SHA-256", "user", "pencil")
        send(client.client_first())
        send(client.respond(receive()))      # or the three steps below
        client.verify_server_final(receive())

    ``respond`` is :meth:`receive_server_first`, then :meth:`derive_keys` when
    :attr:`needs_key_derivation` is true, then :meth:`client_final`.

    Every problem with a server message raises a :class:`~errors.ScramError`; after
    one, the client refuses to go on.
    """

    def __init__(
        self,
        mechanism: str,
        username: str,
        password: str,
        *,
        authzid: str | None = None,
        gs2_flag: str | None = None,
        cb_type: str | None = None,
        cb_data: bytes | None = None,
        advertisement: ServerAdvertisement | None = None,
        require_downgrade_protection: bool = False,
        min_iterations: int = DEFAULT_MIN_ITERATIONS,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
        key_cache: ScramKeyCache | None = None,
        nonce: str | None = None,
        kdf: KDF = hashlib.pbkdf2_hmac,
        secret_owner: Hashable | None = None,
    ) -> None:
        """
        :param mechanism: one of :data:`SCRAM_MECHANISMS`
        :param gs2_flag: ``"p"`` (the default for -PLUS mechanisms: binding with
            ``cb_type``), ``"y"`` (the client could bind but the server offered no
            -PLUS mechanism) or ``"n"`` (the default otherwise: the client can't bind)
        :param cb_type: channel-binding type, with ``"p"``
        :param cb_data: channel-binding data of ``cb_type``, with ``"p"``
        :param advertisement: mechanisms and channel-binding types the server
            advertised, to check its XEP-0474 hash; without it the hash is not checked
        :param require_downgrade_protection: fail unless server-first carries a valid
            XEP-0474 hash (XEP-0474 rule 6: -PLUS offered, no mutual binding type)
        :param min_iterations: lowest iteration count accepted
        :param max_iterations: highest iteration count accepted
        :param key_cache: cache of derived keys to read before running PBKDF2 and to
            fill after a successful exchange
        :param nonce: client nonce, for test vectors only (random by default)
        :param kdf: PBKDF2 implementation, with :func:`hashlib.pbkdf2_hmac`'s signature
        :param secret_owner: who the password belongs to, for the log redaction (see
            :func:`libervia.backend.core.log.register_secret`)
        """
        try:
            self._hash, self._plus = parse_mechanism(mechanism)
        except ValueError as e:
            raise errors.NoAcceptableMechanism(str(e)) from None
        self.mechanism = mechanism
        if gs2_flag is None:
            gs2_flag = "p" if self._plus else "n"
        if not _valid_gs2_flag(gs2_flag):
            raise ValueError(f"invalid GS2 channel-binding flag {gs2_flag!r}")
        if self._plus != (gs2_flag == "p"):
            raise ValueError(f"{mechanism} can't be used with the GS2 flag {gs2_flag!r}")
        if gs2_flag == "p":
            if not cb_type or cb_data is None:
                raise ValueError(f"{mechanism} needs a channel-binding type and its data")
        elif cb_type is not None or cb_data is not None:
            raise ValueError("channel-binding data given without the 'p' GS2 flag")
        if min_iterations < 1 or max_iterations < min_iterations:
            raise ValueError("invalid iteration count limits")
        self.gs2_flag = gs2_flag
        self.cb_type = cb_type
        self._cb_data = cb_data or b""
        self._advertisement = advertisement
        self._require_ssdp = require_downgrade_protection
        self.min_iterations = min_iterations
        self.max_iterations = max_iterations
        self._key_cache = key_cache
        self._kdf = kdf

        self._username = escape_saslname(saslprep(username, "user name"))
        self._password = saslprep(password, "password")
        register_secret(password, secret_owner)
        register_secret(self._password, secret_owner)
        self._authzid = ""
        if authzid:
            self._authzid = escape_saslname(saslprep(authzid, "authorization identity"))
        if nonce is None:
            nonce = secrets.token_urlsafe(_NONCE_BYTES)
        elif not nonce or not is_nonce(nonce):
            raise ValueError("a nonce must be non-empty printable ASCII without ','")
        self._client_nonce = nonce

        self._state = _State.INITIAL
        self._server_first: _ServerFirst | None = None
        self._server_first_text = ""
        self._cache_entry: KeyCacheEntry | None = None
        self._keys: ScramKeys | None = None
        self._expected_signature: bytes | None = None

        #: the server sent a valid XEP-0474 hash
        self.downgrade_protection_verified = False
        #: the keys came from the cache (no PBKDF2 run for this exchange)
        self.used_cached_keys = False
        #: the number of PBKDF2 runs made by this client (0 or 1)
        self.kdf_runs = 0

    # public state

    @property
    def scram_hash(self) -> ScramHash:
        return self._hash

    @property
    def done(self) -> bool:
        """The server proved its identity: the exchange succeeded."""
        return self._state is _State.DONE

    @property
    def needs_key_derivation(self) -> bool:
        """:meth:`derive_keys` must run before :meth:`client_final`."""
        return self._state is _State.KEYS_NEEDED

    @property
    def waiting_for_server_final(self) -> bool:
        return self._state is _State.FINAL_SENT

    @property
    def cache_entry(self) -> KeyCacheEntry | None:
        """Where the keys of this exchange belong in a :class:`ScramKeyCache`."""
        return self._cache_entry

    @property
    def gs2_header(self) -> str:
        if self.gs2_flag == "p":
            flag = f"p={self.cb_type}"
        else:
            flag = self.gs2_flag
        authzid = f"a={self._authzid}" if self._authzid else ""
        return f"{flag},{authzid},"

    # steps

    def client_first(self) -> bytes:
        """The first message, to send with the ``<auth/>`` element."""
        self._expect(_State.INITIAL)
        self._client_first_bare = f"n={self._username},r={self._client_nonce}"
        self._state = _State.FIRST_SENT
        return (self.gs2_header + self._client_first_bare).encode()

    def receive_server_first(self, data: bytes) -> None:
        """Check the server's first message (its challenge)."""
        self._expect(_State.FIRST_SENT)
        with self._failing():
            text = decode_message(data, "server-first-message")
            self._server_first = self._parse_server_first(text)
            self._server_first_text = text
            self._cache_entry = KeyCacheEntry(
                self._hash.name, self._server_first.salt, self._server_first.iterations
            )
            if self._key_cache is not None:
                self._keys = self._key_cache.get(self._cache_entry)
            self.used_cached_keys = self._keys is not None
            self._state = _State.READY if self._keys is not None else _State.KEYS_NEEDED

    def derive_keys(self) -> None:
        """Run PBKDF2 (slow, thread safe: it only touches this object)."""
        self._expect(_State.KEYS_NEEDED)
        assert self._server_first is not None
        self._keys = derive_keys(
            self._hash, self._password, self._server_first.salt,
            self._server_first.iterations, self._kdf,
        )
        self.kdf_runs += 1
        self._state = _State.READY

    def client_final(self) -> bytes:
        """The final client message, with the proof."""
        self._expect(_State.READY)
        assert self._server_first is not None and self._keys is not None
        channel_binding = b64encode(self.gs2_header.encode() + self._cb_data)
        without_proof = f"c={channel_binding},r={self._server_first.nonce}"
        auth_message = ",".join(
            (self._client_first_bare, self._server_first_text, without_proof)
        ).encode()
        stored_key = self._hash.hash(self._keys.client_key)
        signature = self._hash.hmac(stored_key, auth_message)
        # XOR of two digests as integers: a loop over their bytes costs ten times more
        proof = (int.from_bytes(self._keys.client_key) ^ int.from_bytes(signature)
                 ).to_bytes(len(signature))
        self._expected_signature = self._hash.hmac(self._keys.server_key, auth_message)
        self._state = _State.FINAL_SENT
        return f"{without_proof},p={b64encode(proof)}".encode()

    def respond(self, server_first: bytes) -> bytes:
        """Check server-first and return client-final, deriving the keys if needed."""
        self.receive_server_first(server_first)
        if self.needs_key_derivation:
            self.derive_keys()
        return self.client_final()

    def verify_server_final(self, data: bytes) -> None:
        """Check the server's signature (the data of ``<success/>``).

        On success, the keys go to the cache.
        """
        self._expect(_State.FINAL_SENT)
        with self._failing():
            text = decode_message(data, "server-final-message")
            attributes = server_attributes(text, "server-final-message")
            names = [name for name, _ in attributes]
            if names[0] != "v":
                raise errors.MalformedServerMessage("server-final-message has no 'v='")
            signature = b64decode_strict(attributes[0][1], "the server signature")
            assert self._expected_signature is not None
            if not hmac.compare_digest(signature, self._expected_signature):
                raise errors.ServerSignatureMismatch(
                    "the server signature is wrong: the server does not know the "
                    "password, the connection may be intercepted; authentication aborted"
                )
            self._state = _State.DONE
        if self._key_cache is not None and self._cache_entry is not None and self._keys:
            if not self.used_cached_keys:
                self._key_cache.put(self._cache_entry, self._keys)
        log.debug(
            "{mechanism} server signature verified (cached keys: {cached})",
            mechanism=self.mechanism,
            cached=self.used_cached_keys,
        )

    def fail(self) -> None:
        """Mark the exchange as failed (the caller gave up)."""
        self._state = _State.FAILED

    # internals

    def _expect(self, state: _State) -> None:
        if self._state is not state:
            if self._state is _State.FAILED:
                raise errors.ScramError("the SCRAM exchange already failed")
            raise errors.MalformedServerMessage(
                f"unexpected SCRAM step: the exchange is {self._state.value}"
            )

    def _failing(self) -> "_FailOnError":
        return _FailOnError(self)

    def _parse_server_first(self, text: str) -> _ServerFirst:
        attributes = server_attributes(text, "server-first-message")
        names = [name for name, _ in attributes]
        if names[:3] != ["r", "s", "i"]:
            raise errors.MalformedServerMessage(
                "server-first-message must start with the r=, s= and i= attributes"
            )
        nonce, salt_b64, iterations_text = (value for _, value in attributes[:3])
        if not is_nonce(nonce):
            raise errors.MalformedServerMessage("the server nonce is not printable ASCII")
        if not nonce.startswith(self._client_nonce) or len(nonce) == len(
            self._client_nonce
        ):
            raise errors.NonceMismatch(
                "the server nonce does not extend the client nonce: replayed or forged "
                "message, authentication aborted"
            )
        salt = b64decode_strict(salt_b64, "the salt")
        if not salt:
            raise errors.MalformedServerMessage("the salt is empty")
        iterations = parse_iterations(iterations_text, self.max_iterations)
        if iterations < self.min_iterations:
            raise errors.InsufficientIterations(
                f"the server uses {iterations} PBKDF2 iterations, fewer than the "
                f"{self.min_iterations} required: ask the server admin to raise it, "
                "or lower the floor in the profile if you accept the risk"
            )
        extensions = dict(attributes[3:])
        self._check_downgrade(extensions)
        return _ServerFirst(nonce, salt, iterations, extensions)

    def _check_downgrade(self, extensions: dict[str, str]) -> None:
        hashes_received = [
            (b64decode_strict(extensions[name], "the downgrade protection hash"), legacy)
            for name, legacy in ((SSDP_ATTRIBUTE, False), (SSDP_LEGACY_ATTRIBUTE, True))
            if name in extensions
        ]
        if not hashes_received:
            if self._require_ssdp:
                raise errors.DowngradeDetected(
                    "the server offers channel binding but none of the types we "
                    "support, and sent no downgrade protection hash (XEP-0474): the "
                    "lists may have been tampered with, authentication aborted"
                )
            return
        if self._advertisement is None:
            log.debug("downgrade protection hash received but not checked")
            return
        for received, legacy in hashes_received:
            expected = self._advertisement.ssdp_hash(self._hash, legacy)
            if not hmac.compare_digest(received, expected):
                raise errors.DowngradeDetected(
                    "the mechanisms or channel-binding types we received differ from "
                    "the ones the server advertised (XEP-0474): the connection is being "
                    "tampered with, authentication aborted"
                )
        self.downgrade_protection_verified = True


class _FailOnError:
    """Context manager turning every error into a :class:`errors.ScramError`.

    The parsers are written not to raise anything else; this is the safety net that
    keeps the promise even if one of them has a bug.
    """

    def __init__(self, client: ScramClient) -> None:
        self.client = client

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            return False
        self.client._state = _State.FAILED
        if issubclass(exc_type, errors.ScramError):
            return False
        if issubclass(exc_type, Exception):
            raise errors.MalformedServerMessage(
                f"invalid SCRAM server message ({exc_type.__name__})"
            ) from None
        return False
