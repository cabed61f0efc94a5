"""The roster bridge methods (``roster_*``, ``subscription_*``), for frontends.

Reading works while the profile is offline (the stored roster and requests); changing
needs the profile connected.
"""

from typing import Any

from libervia.backend.core.interfaces import Client
from libervia.backend.plugins.roster.operations import Roster
from libervia.backend.xmpp.profiles import StorageHost


class RosterBridge:
    """``roster_get``, ``roster_add``... as the bridge calls them."""

    def __init__(self, host: StorageHost, roster: Roster) -> None:
        self.host = host
        self.roster = roster

    def register(self) -> None:
        """Register the methods on the host's bridge."""
        bridge = self.host.bridge
        for name in ("roster_get", "roster_add", "roster_update", "roster_remove",
                     "subscription_pending", "subscription_answer"):
            bridge.register_method(name, getattr(self, name))

    def _client(self, profile: str) -> Client:
        return self.host.clients.get(profile)

    async def roster_get(self, profile: str) -> list[dict[str, Any]]:
        """The profile's contacts: ``[{jid, name, subscription, ask, groups,
        presence}]``."""
        return await self.roster.get_roster(profile)

    async def roster_add(self, profile: str, jid: str, name: str | None = None,
                         groups: list[str] | None = None) -> dict[str, Any]:
        """Add a contact, and ask to see its presence."""
        return await self.roster.add(self._client(profile), jid, name, groups)

    async def roster_update(self, profile: str, jid: str, name: str | None = None,
                            groups: list[str] | None = None) -> dict[str, Any]:
        """Change a contact's name or groups (``None`` keeps it, ``""`` or ``[]``
        removes it)."""
        return await self.roster.update(self._client(profile), jid, name, groups)

    async def roster_remove(self, profile: str, jid: str) -> None:
        """Remove a contact (both subscriptions are cancelled)."""
        await self.roster.remove(self._client(profile), jid)

    async def subscription_pending(self, profile: str) -> list[dict[str, Any]]:
        """The subscription requests waiting for an answer: ``[{jid, status,
        received}]``."""
        return [r.to_dict() for r in await self.roster.pending(profile)]

    async def subscription_answer(self, profile: str, jid: str, accept: bool) -> None:
        """Accept or deny a contact's subscription request."""
        await self.roster.answer(self._client(profile), jid, accept)
