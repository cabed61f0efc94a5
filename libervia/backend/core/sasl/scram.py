"""SCRAM client (RFC 5802, RFC 7677), without I/O.

:class:`ScramClient` is a state machine: it produces the client messages and checks
the server ones, as bytes, and knows nothing about XMPP, Twisted or sockets.  The
:mod:`~libervia.backend.core.sasl.initializer` module drives it from an XML stream.

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
entirely when a :class:`ScramKeyCache` already holds the keys for the server's
(hash, salt, iteration count).
"""

import base64
import binascii
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

import precis_i18n

from libervia.backend.core.log import getLogger, register_secret
from libervia.backend.core.sasl import errors

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
#: RFC 8265 OpaqueString, the PRECIS successor of SASLprep (RFC 4013)
_OPAQUE_STRING = precis_i18n.get_profile("OpaqueString")


@dataclass(frozen=True)
class ScramHash:
    """A hash function usable by SCRAM."""

    #: name as it appears in the mechanism name ("SHA-256")
    name: str
    #: name for :mod:`hashlib`
    hashlib_name: str

    @property
    def digest_size(self) -> int:
        return hashlib.new(self.hashlib_name).digest_size

    def hash(self, data: bytes) -> bytes:
        return hashlib.new(self.hashlib_name, data).digest()

    def hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.digest(key, data, self.hashlib_name)


HASHES: dict[str, ScramHash] = {
    h.name: h
    for h in (
        ScramHash("SHA-1", "sha1"),
        ScramHash("SHA-256", "sha256"),
        ScramHash("SHA-512", "sha512"),
    )
}

#: every SCRAM mechanism this module implements, strongest first
SCRAM_MECHANISMS: tuple[str, ...] = (
    "SCRAM-SHA-512-PLUS",
    "SCRAM-SHA-256-PLUS",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-512",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
)


def parse_mechanism(mechanism: str) -> tuple[ScramHash, bool]:
    """Return the hash and the channel-binding flag of a SCRAM mechanism name.

    :raises ValueError: the name is not one of :data:`SCRAM_MECHANISMS`
    """
    if mechanism not in SCRAM_MECHANISMS:
        raise ValueError(f"unsupported SCRAM mechanism {mechanism!r}")
    plus = mechanism.endswith("-PLUS")
    hash_name = mechanism[len("SCRAM-"):]
    if plus:
        hash_name = hash_name[: -len("-PLUS")]
    return HASHES[hash_name], plus


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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True, repr=False)
class ScramKeys:
    """The keys derived from the password for one (hash, salt, iterations).

    They are password equivalent for this server: store them as carefully as the
    password itself.
    """

    client_key: bytes
    server_key: bytes

    def __repr__(self) -> str:
        return "<ScramKeys (hidden)>"


@dataclass(frozen=True)
class KeyCacheEntry:
    """Where a :class:`ScramKeys` applies."""

    hash_name: str
    salt: bytes
    iterations: int


class ScramKeyCache:
    """Derived SCRAM keys of *one account*, so that a reconnection runs no PBKDF2.

    Entries are keyed on (hash, salt, iterations): when the server changes the salt or
    the count (a password change does), the old entry simply stops matching.  The
    cache holds at most ``max_entries`` entries, the least recently used going first
    (a server storing plain passwords may pick a new salt at every login).

    The connection layer persists it per profile through :meth:`export` and
    :meth:`load` (its values are password equivalent: encrypt them like the password),
    and must :meth:`clear` it when the profile's password changes.

    :ivar hits: number of lookups that found keys (each one is a PBKDF2 not run)
    :ivar misses: number of lookups that found nothing
    """

    def __init__(
        self,
        max_entries: int = 8,
        on_change: Callable[["ScramKeyCache"], None] | None = None,
    ) -> None:
        """
        :param on_change: called after every change, to persist the cache
        """
        self.max_entries = max_entries
        self.on_change = on_change
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[KeyCacheEntry, ScramKeys] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<ScramKeyCache {len(self)} entries, {self.hits} hits, {self.misses} misses>"

    def get(self, entry: KeyCacheEntry) -> ScramKeys | None:
        keys = self._entries.get(entry)
        if keys is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(entry)
        return keys

    def put(self, entry: KeyCacheEntry, keys: ScramKeys) -> None:
        self._entries[entry] = keys
        self._entries.move_to_end(entry)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        self._changed()

    def discard(self, entry: KeyCacheEntry) -> None:
        if self._entries.pop(entry, None) is not None:
            self._changed()

    def clear(self) -> None:
        """Forget every key (to call when the password changes)."""
        if self._entries:
            self._entries.clear()
            self._changed()

    def export(self) -> list[dict[str, str | int]]:
        """Serialisable form of the cache (secret: encrypt it at rest)."""
        return [
            {
                "hash": entry.hash_name,
                "salt": _b64(entry.salt),
                "iterations": entry.iterations,
                "client_key": _b64(keys.client_key),
                "server_key": _b64(keys.server_key),
            }
            for entry, keys in self._entries.items()
        ]

    def load(self, data: Iterable[dict[str, str | int]]) -> None:
        """Add the entries produced by :meth:`export`; invalid ones are skipped."""
        for item in data:
            try:
                scram_hash = HASHES[str(item["hash"])]
                entry = KeyCacheEntry(
                    scram_hash.name,
                    base64.b64decode(str(item["salt"]), validate=True),
                    int(item["iterations"]),
                )
                keys = ScramKeys(
                    base64.b64decode(str(item["client_key"]), validate=True),
                    base64.b64decode(str(item["server_key"]), validate=True),
                )
            except (KeyError, TypeError, ValueError, binascii.Error):
                keys = None
            size = scram_hash.digest_size if keys else 0
            if (
                keys is None
                or len(keys.client_key) != size
                or len(keys.server_key) != size
                or entry.iterations < 1
            ):
                log.warn("ignoring an invalid entry of a SCRAM key cache")
                continue
            self._entries[entry] = keys
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)


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
        kdf: Callable[[str, bytes, bytes, int], bytes] = hashlib.pbkdf2_hmac,
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
        register_secret(password)
        register_secret(self._password)
        self._authzid = ""
        if authzid:
            self._authzid = escape_saslname(saslprep(authzid, "authorization identity"))
        if nonce is None:
            nonce = secrets.token_urlsafe(_NONCE_BYTES)
        elif not nonce or not _is_nonce(nonce):
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
            text = _decode(data, "server-first-message")
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
        salted = self._kdf(
            self._hash.hashlib_name,
            self._password.encode(),
            self._server_first.salt,
            self._server_first.iterations,
        )
        self.kdf_runs += 1
        self._keys = ScramKeys(
            self._hash.hmac(salted, b"Client Key"), self._hash.hmac(salted, b"Server Key")
        )
        self._state = _State.READY

    def client_final(self) -> bytes:
        """The final client message, with the proof."""
        self._expect(_State.READY)
        assert self._server_first is not None and self._keys is not None
        channel_binding = _b64(self.gs2_header.encode() + self._cb_data)
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
        return f"{without_proof},p={_b64(proof)}".encode()

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
            text = _decode(data, "server-final-message")
            attributes = _server_attributes(text, "server-final-message")
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
        attributes = _server_attributes(text, "server-first-message")
        names = [name for name, _ in attributes]
        if names[:3] != ["r", "s", "i"]:
            raise errors.MalformedServerMessage(
                "server-first-message must start with the r=, s= and i= attributes"
            )
        nonce, salt_b64, iterations_text = (value for _, value in attributes[:3])
        if not _is_nonce(nonce):
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
        iterations = _parse_iterations(iterations_text, self.max_iterations)
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


def _is_nonce(text: str) -> bool:
    # printable = %x21-2B / %x2D-7E (RFC 5802): printable ASCII except space and ','
    # (string methods: a check per character costs as much as the rest of the parsing)
    return text.isascii() and text.isprintable() and " " not in text and "," not in text


def _decode(data: bytes, what: str) -> str:
    if not isinstance(data, bytes | bytearray):
        raise errors.MalformedServerMessage(f"{what} is not bytes")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise errors.MalformedServerMessage(f"{what} is not valid UTF-8") from None
    if "\x00" in text:
        raise errors.MalformedServerMessage(f"{what} contains a NUL character")
    return text


def _parse_attributes(text: str, what: str) -> list[tuple[str, str]]:
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


def _parse_iterations(text: str, maximum: int) -> int:
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


def _server_attributes(text: str, what: str) -> list[tuple[str, str]]:
    """Attributes of a server message, raising for ``e=`` and for a mandatory ``m=``."""
    attributes = _parse_attributes(text, what)
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
