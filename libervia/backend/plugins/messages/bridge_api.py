"""The message bridge methods (``message_send``, ``message_get``, ``history_get``),
for frontends.

The history is read while the profile is offline too; sending needs it connected.
"""

from typing import Any, Literal

from libervia.backend.plugins.messages.operations import Messages, history_filter
from libervia.backend.xmpp.profiles import StorageHost


class MessagesBridge:
    """The bridge methods, as the bridge calls them."""

    def __init__(self, host: StorageHost, messages: Messages) -> None:
        self.host = host
        self.messages = messages

    def register(self) -> None:
        """Register the methods on the host's bridge."""
        bridge = self.host.bridge
        for name in ("message_send", "message_get", "history_get"):
            bridge.register_method(name, getattr(self, name))

    async def message_send(self, profile: str, to: str,
                           body: str | dict[str, str] | None = None,
                           subject: str | dict[str, str] | None = None,
                           thread: str | None = None,
                           type: Literal["chat", "normal", "headline"] | None = None,  # noqa: A002
                           extra: dict[str, Any] | None = None) -> str:
        """Send a message (body: a text, or texts by language); answer its uid."""
        client = self.host.clients.get(profile)
        message = await self.messages.send(client, to, body, subject, thread, type, extra)
        return message.uid

    async def message_get(self, profile: str, uid: str) -> dict[str, Any]:
        """The stored message ``uid``."""
        return (await self.messages.get(profile, uid)).to_dict()

    async def history_get(self, profile: str, with_jid: str | None = None,
                          limit: int = 50, before: str | None = None,
                          after: str | None = None, since: str | None = None,
                          until: str | None = None, search: str | None = None,
                          types: list[str] | None = None,
                          order: Literal["desc", "asc"] = "desc") -> dict[str, Any]:
        """A page of the history: ``{messages: [...], more}``, newest first unless
        ``order`` is ``asc``; ``before``/``after`` are uids, ``since``/``until`` ISO 8601
        dates, ``search`` words that every body found holds."""
        filter_ = history_filter(with_jid, limit, before, after, since, until, search,
                                 types, order)
        return (await self.messages.history(profile, filter_)).to_dict()
