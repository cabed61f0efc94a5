"""Bridge methods of the core: profiles and their connections.

Plugins register their own methods (pubsub, cache...) the same way, on
``host.bridge``.  Every method takes named parameters and returns plain JSON data.
"""

from dataclasses import fields
from typing import Any, Literal

from libervia.backend.core.exceptions import ProfileNotFound
from libervia.backend.xmpp.clients import ClientManager, ConnectionHost
from libervia.backend.xmpp.profiles import ConnectionOptions, ProfileError, ProfileManager

#: connection settings ``profile_modify`` can put back to their default
ResettableOption = Literal["host", "port", "ca_file", "mechanisms"]


class CoreAPI:
    """The profile methods of the bridge, registered when the backend is built."""

    def __init__(self, host: ConnectionHost) -> None:
        self.host = host
        bridge = host.bridge
        for name in ("profile_list", "profile_create", "profile_modify", "profile_delete",
                     "profile_info", "profile_connect", "profile_disconnect",
                     "profile_set_password"):
            bridge.register_method(name, getattr(self, name))

    @property
    def profiles(self) -> ProfileManager:
        return self.host.profiles

    @property
    def clients(self) -> ClientManager:
        return self.host.clients

    async def profile_list(self) -> list[dict[str, Any]]:
        """Every profile with its JID and connection state."""
        result = []
        for name in await self.profiles.names():
            profile = await self.profiles.get(name)
            result.append({"name": name, "jid": profile.jid,
                           "state": self.clients.info(name)["state"],
                           "autoconnect": profile.options.autoconnect})
        return result

    async def profile_create(
        self,
        name: str,
        jid: str,
        password: str | None = None,
        host: str | None = None,
        port: int | None = None,
        direct_tls: bool = False,
        ca_file: str | None = None,
        mechanisms: list[str] | None = None,
        autoconnect: bool = False,
        check_only: bool = False,
    ) -> dict[str, Any]:
        """Create a profile; the password is stored encrypted.

        With ``check_only``, nothing is created and the password may be left out: the
        name, the JID and the options are checked, and that no profile has the name
        yet; the answer is the name and the JID as they would be stored.  Frontends
        do this before asking for the password.
        """
        options = _options(host, port, direct_tls, ca_file, mechanisms, autoconnect)
        if check_only:
            return {"name": name, "jid": await self.profiles.check_new(name, jid, options)}
        if password is None:
            raise ProfileError("a password is needed to create a profile")
        profile = await self.profiles.create(name, jid, password, options)
        return profile.as_dict()

    async def profile_modify(
        self,
        name: str,
        host: str | None = None,
        port: int | None = None,
        direct_tls: bool | None = None,
        ca_file: str | None = None,
        mechanisms: list[str] | None = None,
        autoconnect: bool | None = None,
        reset: list[ResettableOption] | None = None,
    ) -> dict[str, Any]:
        """Change a profile's connection settings; they apply from its next connection.

        A setting left out (``null``) is unchanged; ``reset`` names settings to put back
        to their default (host and port from DNS, the system's CAs, every mechanism).
        The answer is the profile, with ``changed`` (the settings whose value changed)
        and ``connection`` (its state: a connected profile keeps its connection as it
        is until it reconnects).
        """
        changes: dict[str, Any] = {key: value for key, value in (
            ("host", host), ("port", port), ("direct_tls", direct_tls),
            ("ca_file", ca_file), ("autoconnect", autoconnect)) if value is not None}
        if mechanisms is not None:
            changes["mechanisms"] = tuple(mechanisms)
        for key in reset or ():
            if key in changes:
                raise ProfileError(f"{key} is given a value and reset at once: choose one")
            changes[key] = () if key == "mechanisms" else None
        if not changes:
            raise ProfileError("nothing to change: give at least one setting")
        before = (await self.profiles.get(name)).options
        profile = await self.profiles.update(name, **changes)
        changed = [field.name for field in fields(ConnectionOptions) if field.name in changes
                   and getattr(before, field.name) != getattr(profile.options, field.name)]
        return profile.as_dict() | {"changed": changed,
                                    "connection": self.clients.info(name)}

    async def profile_delete(self, name: str) -> None:
        """Delete a profile and everything stored for it (disconnecting it first)."""
        if name in self.clients.clients:
            await self.clients.disconnect(name)
        await self.profiles.delete(name)
        self.clients.forget(name)

    async def profile_set_password(self, name: str, password: str) -> None:
        """Change the password the backend uses for a profile (from its next login)."""
        await self.profiles.set_password(name, password)
        await self.clients.password_changed(name)

    async def profile_info(self, name: str) -> dict[str, Any]:
        """A profile's settings and, if connected, what its connection negotiated."""
        profile = await self.profiles.get(name)
        return profile.as_dict() | {"connection": self.clients.info(name)}

    async def profile_connect(self, name: str) -> dict[str, Any]:
        """Connect a profile; answer once connected, with the connection's details."""
        client = await self.clients.connect(name)
        return client.info()

    async def profile_disconnect(self, name: str) -> None:
        """Disconnect a profile."""
        if name not in self.clients.clients:
            if not await self.profiles.exists(name):
                raise ProfileNotFound(name)
            return
        await self.clients.disconnect(name)


def _options(host: str | None, port: int | None, direct_tls: bool, ca_file: str | None,
             mechanisms: list[str] | None, autoconnect: bool) -> ConnectionOptions:
    """The connection options of a new profile, checked (:class:`ProfileError`)."""
    return ConnectionOptions(
        host=host, port=port, direct_tls=bool(direct_tls), ca_file=ca_file,
        mechanisms=tuple(mechanisms or ()), autoconnect=bool(autoconnect),
    )
