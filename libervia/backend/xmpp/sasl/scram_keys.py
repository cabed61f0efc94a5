"""SCRAM hashes and the keys derived from the password, and their cache.

The derivation (PBKDF2, :func:`derive_keys`) is the only slow step of an exchange: a
:class:`ScramKeyCache` keeps the derived keys of an account per (hash, salt, iteration
count), so that a reconnection runs none.  The keys are password equivalent for the
server they were derived for: the cache is encrypted at rest by its owner.
"""

import base64
import binascii
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from libervia.backend.core.log import getLogger
from libervia.backend.xmpp.sasl.scram_messages import b64encode

log = getLogger(__name__)

#: PBKDF2 with :func:`hashlib.pbkdf2_hmac`'s signature (hash name, password, salt,
#: iterations)
KDF = Callable[[str, bytes, bytes, int], bytes]


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


def derive_keys(
    scram_hash: ScramHash,
    password: str,
    salt: bytes,
    iterations: int,
    kdf: KDF = hashlib.pbkdf2_hmac,
) -> ScramKeys:
    """Run PBKDF2 on a (SASLprepped) password and derive the client and server keys.

    Slow (that is the point of PBKDF2) and thread safe.
    """
    salted = kdf(scram_hash.hashlib_name, password.encode(), salt, iterations)
    return ScramKeys(
        scram_hash.hmac(salted, b"Client Key"), scram_hash.hmac(salted, b"Server Key")
    )


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
                "salt": b64encode(entry.salt),
                "iterations": entry.iterations,
                "client_key": b64encode(keys.client_key),
                "server_key": b64encode(keys.server_key),
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
