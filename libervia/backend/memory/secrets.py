"""Secrets at rest: values encrypted with a key that is not in the database.

Account passwords (and SCRAM keys derived from them) must be stored for the backend to
log in unattended, but a copy of the database alone must not give them away.  They are
encrypted with AES-256-GCM (``cryptography``'s AEAD implementation) under a key kept in
a file of its own, ``secrets.key`` in the local folder by default (``[storage]
secrets_key``), created mode 0600.  With PostgreSQL, the key stays on the backend's
machine while the data lives on the database server.

Each value is bound to its *context* (what it is and which profile it belongs to) as
associated data, so a ciphertext copied to another row or profile does not decrypt.

Stored format: ``version (1 byte) | nonce (12 bytes) | ciphertext+tag``.
"""

import os
import secrets as _secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from libervia.backend.core.config import declare, parse_path
from libervia.backend.core.exceptions import BackendError, StartupError

FORMAT_VERSION = 1
NONCE_SIZE = 12
KEY_SIZE = 32
KEY_FILE_NAME = "secrets.key"

declare(
    "storage", "secrets_key", parse_path, None,
    "File holding the key that encrypts account passwords in the database. Keep it "
    "out of database backups you give away; without it, stored passwords are lost.",
    default_doc="``{local_dir}/secrets.key``",
)


class SecretError(BackendError):
    """A stored secret can't be decrypted (wrong key, altered data)."""


class SecretBox:
    """Encrypts and decrypts small secrets with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"secret key must be {KEY_SIZE} bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:  # never show the key
        return "<SecretBox>"

    @staticmethod
    def _aad(context: str) -> bytes:
        return b"libervia-secret\0" + context.encode()

    def encrypt(self, plaintext: bytes, context: str) -> bytes:
        """Encrypt ``plaintext`` for ``context`` (e.g. ``"password:profile_name"``)."""
        nonce = _secrets.token_bytes(NONCE_SIZE)
        sealed = self._aead.encrypt(nonce, plaintext, self._aad(context))
        return bytes([FORMAT_VERSION]) + nonce + sealed

    def decrypt(self, token: bytes, context: str) -> bytes:
        """Decrypt what :meth:`encrypt` gave for the same ``context``.

        :raise SecretError: unknown format, wrong key, other context, or altered data
        """
        if len(token) < 1 + NONCE_SIZE + 16 or token[0] != FORMAT_VERSION:
            raise SecretError(f"stored secret for {context.split(':')[0]} has an unknown format")
        nonce, sealed = token[1:1 + NONCE_SIZE], token[1 + NONCE_SIZE:]
        try:
            return self._aead.decrypt(nonce, sealed, self._aad(context))
        except InvalidTag:
            raise SecretError(
                f"stored secret for {context.split(':')[0]} can't be decrypted: the secrets "
                "key file is not the one it was encrypted with, or the data was altered"
            ) from None

    @classmethod
    def from_key_file(cls, path: Path, create: bool = True) -> "SecretBox":
        """Load the key file, creating it (mode 0600) if it does not exist.

        :raise StartupError: the file is readable by other users, has a wrong size, or
            can't be read or written
        """
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            if not create:
                raise StartupError(f"secrets key file {path} does not exist") from None
            key = _create_key_file(path)
            if key is None:  # created by another process meanwhile
                return cls.from_key_file(path, create=False)
            return cls(key)
        except OSError as e:
            raise StartupError(f"can't read secrets key file {path}: {e.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise StartupError(
                    f"secrets key file {path} is accessible by other users (mode "
                    f"{stat.S_IMODE(mode):04o}): run 'chmod 600 {path}'"
                )
            key = f.read(KEY_SIZE + 1)
        if len(key) != KEY_SIZE:
            raise StartupError(
                f"secrets key file {path} is damaged ({len(key)} bytes instead of "
                f"{KEY_SIZE}); restore it from a backup"
            )
        return cls(key)


def _create_key_file(path: Path) -> bytes | None:
    key = _secrets.token_bytes(KEY_SIZE)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    except OSError as e:
        raise StartupError(f"can't create secrets key file {path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    return key
