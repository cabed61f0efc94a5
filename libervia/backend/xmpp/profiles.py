"""Profiles: the XMPP accounts the backend holds.

A profile has a name (used by frontends: ``li -p NAME``), a JID, a password and
connection options.  Options are stored as the profile's parameters (category
``connection``); the password is encrypted at rest with the secrets key (see
:mod:`libervia.backend.memory.secrets`) and never logged.

Where things are stored:

=====================  =====================================================
profile name            ``profiles`` table
JID and options         parameters ``connection/*`` of the profile
password                private binary value ``secrets/password``, encrypted
SCRAM state             private values of namespace ``sasl`` (see the connection)
=====================  =====================================================

Logs: a profile's password is registered as a secret (redacted from log lines, see
:mod:`libervia.backend.core.log`) once it is in use, that is once the profile is
created or its password read to connect, and forgotten when the profile is deleted or
its password changed (unless another profile has the same).  Its name and JID are
registered as public words, which redaction never blanks.
"""

import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from libervia.backend.core import log as log_module
from libervia.backend.core.exceptions import (
    BackendError,
    ConflictError,
    NotFound,
    ProfileNotFound,
)
from libervia.backend.core.interfaces import Host
from libervia.backend.core.jids import InvalidJID, parse_jid
from libervia.backend.core.log import getLogger
from libervia.backend.memory.secrets import KEY_FILE_NAME, SecretBox
from libervia.backend.memory.storage import Storage
from libervia.backend.xmpp.sasl.mechanisms import MECHANISMS

log = getLogger(__name__)

PARAM_CATEGORY = "connection"
SECRETS_NAMESPACE = "secrets"
PASSWORD_KEY = "password"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}$")


class ProfileError(BackendError, ValueError):
    """A profile's data is invalid; the message says which part and why."""


def secret_owner(name: str) -> tuple[str, str]:
    """The owner under which profile ``name`` registers its secrets and public words
    with :mod:`libervia.backend.core.log`."""
    return ("profile", name)


def _register_public(name: str, jid: str | None = None) -> None:
    owner = secret_owner(name)
    log_module.register_public(name, owner)
    if jid is None:
        return
    parsed = parse_jid(jid)
    for word in (jid, parsed.userhost(), parsed.user, parsed.host):
        if word:
            log_module.register_public(word, owner)


def _jid(value: str) -> str:
    try:
        parsed = parse_jid(value.strip() if isinstance(value, str) else value)
    except InvalidJID as e:
        raise ProfileError(f"invalid JID {value!r}: {e or 'bad format'}") from None
    if not parsed.user:
        raise ProfileError(f"JID {value!r} has no user part: use user@server")
    return parsed.full()


@dataclass(frozen=True)
class ConnectionOptions:
    """How a profile connects.

    :ivar host: server host name or address to connect to, instead of the JID's domain
        (DNS SRV records are used when not set)
    :ivar port: port to connect to (5222 with STARTTLS, 5223 with direct TLS)
    :ivar direct_tls: TLS from the first byte (XEP-0368) instead of STARTTLS
    :ivar ca_file: PEM file of the certificate authorities to trust, for private servers
        (the system's are used when not set)
    :ivar mechanisms: SASL mechanisms allowed, ``()`` for all (strongest offered wins)
    :ivar autoconnect: connect when the backend starts
    """

    host: str | None = None
    port: int | None = None
    direct_tls: bool = False
    ca_file: str | None = None
    mechanisms: tuple[str, ...] = ()
    autoconnect: bool = False

    def __post_init__(self) -> None:
        if self.host is not None and not self.host.strip():
            object.__setattr__(self, "host", None)
        if self.host is not None and (
            len(self.host) > 253
            or any(c.isspace() or not c.isprintable() or c in "/@" for c in self.host)
        ):
            raise ProfileError(f"invalid server host {self.host[:64]!r}: give a host name "
                               "or an IP address")
        if self.port is not None:
            if isinstance(self.port, bool) or not isinstance(self.port, int):
                raise ProfileError(f"port must be an integer, not {self.port!r}")
            if not 0 < self.port < 65536:
                raise ProfileError(f"port {self.port} is out of range (1-65535)")
        mechanisms = tuple(m.strip().upper() for m in self.mechanisms if m.strip())
        unknown = [m for m in mechanisms if m not in MECHANISMS]
        if unknown:
            raise ProfileError(
                f"unknown SASL mechanism(s) {', '.join(unknown)}: use some of "
                f"{', '.join(MECHANISMS)}"
            )
        object.__setattr__(self, "mechanisms", mechanisms)
        if self.ca_file is not None:
            try:
                path = Path(self.ca_file).expanduser()
                is_file = path.is_file()
            except (OSError, RuntimeError, ValueError) as e:
                # a name too long, an unknown ~user...
                reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                raise ProfileError(f"CA file {self.ca_file!r} can't be used: {reason}"
                                   ) from None
            if not is_file:
                raise ProfileError(f"CA file {self.ca_file} does not exist or is not a file")
            object.__setattr__(self, "ca_file", str(path.absolute()))

    def to_params(self) -> dict[str, str | None]:
        return {
            "host": self.host,
            "port": None if self.port is None else str(self.port),
            "direct_tls": "true" if self.direct_tls else "false",
            "ca_file": self.ca_file,
            "mechanisms": ",".join(self.mechanisms) or None,
            "autoconnect": "true" if self.autoconnect else "false",
        }

    @classmethod
    def from_params(cls, params: dict[str, str | None]) -> "ConnectionOptions":
        port = params.get("port")
        mechanisms = params.get("mechanisms") or ""
        return cls(
            host=params.get("host") or None,
            port=int(port) if port else None,
            direct_tls=params.get("direct_tls") == "true",
            ca_file=params.get("ca_file") or None,
            mechanisms=tuple(m for m in mechanisms.split(",") if m),
            autoconnect=params.get("autoconnect") == "true",
        )


@dataclass(frozen=True)
class Profile:
    """A profile as the rest of the backend sees it (no password here)."""

    name: str
    jid: str
    options: ConnectionOptions = field(default_factory=ConnectionOptions)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["options"]["mechanisms"] = list(self.options.mechanisms)
        return data


@runtime_checkable
class StorageHost(Host, Protocol):
    """The host, with the database (what profiles are stored in)."""

    #: the database API, opened and migrated before plugins load
    storage: Storage


class ProfileManager:
    """Create, read, change and delete profiles; reached as ``host.profiles``."""

    def __init__(self, host: StorageHost) -> None:
        self.host = host
        self._box: SecretBox | None = None
        #: names of profiles known to exist (read, created): :meth:`exists` needs no
        #: database call for them
        self._known: set[str] = set()

    @property
    def storage(self) -> Storage:
        """The database the profiles are stored in."""
        return self.host.storage

    def key_file(self) -> Path:
        path = self.host.config.get("storage", "secrets_key")
        return path if path is not None else self.host.config.local_dir / KEY_FILE_NAME

    def load_key(self) -> None:
        """Load (or create) the secrets key; done when the backend starts."""
        self._box = SecretBox.from_key_file(self.key_file())

    @property
    def box(self) -> SecretBox:
        if self._box is None:
            self.load_key()
        assert self._box is not None
        return self._box

    @staticmethod
    def check_name(name: str) -> str:
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise ProfileError(
                f"invalid profile name {name!r}: use 1 to 64 letters, digits or . _ @ + -, "
                "starting with a letter or digit"
            )
        return name

    async def names(self) -> list[str]:
        """Names of every profile, sorted."""
        names = sorted(await self.storage.profiles.get_profiles())
        self._known = set(names)
        for name in names:
            _register_public(name)
        return names

    async def register_public_words(self) -> None:
        """Register every profile's name and JID as public words of the logs (at
        start-up: before any password is read, so none can blank them)."""
        for name in await self.names():
            jid = await self.storage.profiles.get_param(PARAM_CATEGORY, "jid", name)
            if jid is not None:
                _register_public(name, jid)

    async def exists(self, name: str) -> bool:
        """Whether a profile of this name exists (any string may be asked about)."""
        if name in self._known:
            return True
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            return False  # no profile can have it: the database is not asked
        if name in await self.storage.profiles.get_profiles():
            self._known.add(name)
            return True
        return False

    async def require(self, name: str) -> None:
        """Check that a profile named ``name`` exists.

        :raise ProfileNotFound: it does not
        """
        if not await self.exists(name):
            raise ProfileNotFound(name)

    async def check_new(self, name: str, jid: str,
                        options: "ConnectionOptions | None" = None) -> str:
        """Check that a profile could be created with ``name`` and ``jid``; return the
        JID as it would be stored (the options were checked when they were built).

        :raise ProfileError: invalid name or JID
        :raise ConflictError: a profile with this name exists
        """
        self.check_name(name)
        full_jid = _jid(jid)
        if await self.exists(name):
            raise ConflictError(f"a profile named {name!r} exists already: choose "
                                "another name, or delete it first")
        return full_jid

    async def create(
        self,
        name: str,
        jid: str,
        password: str,
        options: ConnectionOptions | None = None,
    ) -> Profile:
        """Create a profile.

        :raise ProfileError: invalid name, JID, password or option
        :raise ConflictError: a profile with this name exists
        """
        full_jid = await self.check_new(name, jid, options)
        if not isinstance(password, str) or not password:
            raise ProfileError("the password must not be empty")
        options = options or ConnectionOptions()
        await self.storage.profiles.create_profile(name)
        try:
            await self._write_params(name, {"jid": full_jid, **options.to_params()})
            await self._store_password(name, password)
        except BaseException:
            # leave nothing half-made behind
            await self.storage.profiles.delete_profile(name)
            raise
        self._known.add(name)
        # only now is the password in use: a refused profile registers nothing
        _register_public(name, full_jid)
        log_module.register_secret(password, secret_owner(name))
        log.info("profile {name} created for {jid}", name=name, jid=full_jid)
        return Profile(name, full_jid, options)

    async def get(self, name: str) -> Profile:
        """Return a profile (without its password).

        :raise NotFound: no such profile
        """
        await self.require(name)
        params = await self.storage.profiles.get_params(profile=name, category=PARAM_CATEGORY)
        values = {key: value for (__, key), value in params.items()}
        jid = values.pop("jid", None)
        if jid is None:
            raise NotFound(f"profile {name!r} has no JID: delete and create it again")
        _register_public(name, jid)
        return Profile(name, jid, ConnectionOptions.from_params(values))

    async def update(
        self, name: str, jid: str | None = None, **changes: Any
    ) -> Profile:
        """Change a profile's JID and/or connection options (``host=...``, ``port=...``)."""
        profile = await self.get(name)
        try:
            options = replace(profile.options, **changes)
        except TypeError as e:
            raise ProfileError(f"unknown profile option: {e}") from None
        new_jid = _jid(jid) if jid is not None else profile.jid
        await self._write_params(name, {"jid": new_jid, **options.to_params()})
        if new_jid != profile.jid:
            log_module.forget_owner(secret_owner(name), secrets=False)
            _register_public(name, new_jid)
        return Profile(name, new_jid, options)

    async def delete(self, name: str) -> None:
        """Delete a profile and everything stored for it.

        :raise ProfileNotFound: no such profile
        """
        await self.require(name)
        self._known.discard(name)
        await self.storage.profiles.delete_profile(name)
        log_module.forget_owner(secret_owner(name))
        log.info("profile {name} deleted", name=name)

    async def set_password(self, name: str, password: str) -> None:
        await self.require(name)
        if not isinstance(password, str) or not password:
            raise ProfileError("the password must not be empty")
        await self._store_password(name, password)
        # the old password (and what the SASL layer derived from it) is not in use any
        # more: another profile having it still holds it registered
        owner = secret_owner(name)
        log_module.forget_owner(owner, public=False)
        log_module.register_secret(password, owner)

    async def get_password(self, name: str) -> str:
        """Decrypt a profile's password (registered as a secret: never logged)."""
        values = await self.storage.profiles.get_privates(
            SECRETS_NAMESPACE, [PASSWORD_KEY], binary=True, profile=name
        )
        token = values.get(PASSWORD_KEY)
        if token is None:
            raise NotFound(f"profile {name!r} has no password: set one")
        password = self.box.decrypt(token, f"{PASSWORD_KEY}:{name}").decode()
        log_module.register_secret(password, secret_owner(name))
        return password

    async def autoconnect_profiles(self) -> list[str]:
        """Names of the profiles to connect when the backend starts."""
        names = []
        for name in await self.names():
            value = await self.storage.profiles.get_param(PARAM_CATEGORY, "autoconnect", name)
            if value == "true":
                names.append(name)
        return names

    async def _write_params(self, name: str, values: dict[str, str | None]) -> None:
        for key, value in values.items():
            if value is None:
                await self.storage.profiles.delete_param(PARAM_CATEGORY, key, name)
            else:
                await self.storage.profiles.set_param(PARAM_CATEGORY, key, value, name)

    async def _store_password(self, name: str, password: str) -> None:
        token = self.box.encrypt(password.encode(), f"{PASSWORD_KEY}:{name}")
        await self.storage.profiles.set_private_value(
            SECRETS_NAMESPACE, PASSWORD_KEY, token, binary=True, profile=name
        )
