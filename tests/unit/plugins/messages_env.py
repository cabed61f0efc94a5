"""A backend with the messages plugin (and, when asked, message carbons) and alice's
client on a stub XML stream, for the messages and carbons unit tests."""

from datetime import UTC, datetime
from typing import Any

from libervia.backend.core.config import Config
from libervia.backend.plugins.messages import MESSAGE_NEW_SIGNAL, NS_SID, MessagesPlugin
from libervia.backend.plugins.messages import PLUGIN_INFO as MESSAGES_INFO
from libervia.backend.plugins.plugin_presence import Presence
from libervia.backend.plugins.plugin_xep_0030 import NS_DISCO_INFO, XEP_0030
from libervia.backend.plugins.plugin_xep_0280 import NS_CARBONS, XEP_0280
from tests.unit.plugins.disco_env import LoadedPlugins
from tests.unit.plugins.presence_env import Host, StreamClient, until

ALICE = "alice@example.org"
#: the clock's time
NOW = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)
BOB = "bob@example.org"


class Backend:
    """A backend (host, presence, disco and messages plugins, and the carbons plugin
    with ``carbons``) and alice's client on a stub stream."""

    def __init__(self, storage: Any, settings: dict | None = None,
                 carbons: bool = False) -> None:
        self.host = host = Host(storage)
        host.reactor.advance(NOW.timestamp())
        host.config = Config.from_dict(settings or {}, env={})
        host.plugin_manager = LoadedPlugins([MESSAGES_INFO])
        host.plugins["PRESENCE"] = Presence(host)
        host.plugins["XEP-0030"] = XEP_0030(host)
        self.messages = host.plugins["MESSAGES"] = MessagesPlugin(host)
        self.carbons = host.plugins["XEP-0280"] = XEP_0280(host) if carbons else None
        self.client = StreamClient()
        self.client.add(self.messages.get_handler(self.client))
        host.clients.clients["alice"] = self.client

    async def connect(self, stanza_ids=True):
        """Start a stream, and answer the question about stanza-ids."""
        self.client.start_stream()
        [request] = await until(self.client.sent_requests)
        assert (request["to"], request.query.uri) == (ALICE, NS_DISCO_INFO)
        feature = f"<feature var='{NS_SID}'/>" if stanza_ids else ""
        self.client.answer(request, f"<query xmlns='{NS_DISCO_INFO}'>"
                                    f"<identity category='account' type='registered'/>"
                                    f"{feature}</query>")
        if self.carbons is not None:
            await self.offer_carbons(True)
        await until(lambda: "alice" in self.messages.stanza_ids)

    async def offer_carbons(self, offered: bool, enabled: bool = True) -> None:
        """Answer the question about the server's features (carbons ``offered``), and
        the request enabling them (``enabled``: a result; else an error)."""
        [request] = await until(self.client.sent_requests)
        assert (request["to"], request.query.uri) == ("example.org", NS_DISCO_INFO)
        feature = f"<feature var='{NS_CARBONS}'/>" if offered else ""
        self.client.answer(request, f"<query xmlns='{NS_DISCO_INFO}'>{feature}</query>")
        if offered:
            [request] = await until(self.client.sent_requests)
            assert request.firstChildElement().uri == NS_CARBONS
            self.client.answer(request, "" if enabled else (
                "<error type='cancel'><not-allowed "
                "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"),
                "result" if enabled else "error")
            if enabled:
                await until(lambda: self.carbons.enabled.get("alice"))

    def receive(self, body="hello", sender=f"{BOB}/phone", stanza_id=None, by=ALICE,
                origin_id=None, extra="", attrs=""):
        parts = [f"<body>{body}</body>" if body is not None else "", extra]
        if stanza_id:
            parts.append(f"<stanza-id xmlns='{NS_SID}' by='{by}' id='{stanza_id}'/>")
        if origin_id:
            parts.append(f"<origin-id xmlns='{NS_SID}' id='{origin_id}'/>")
        sender_attr = f" from='{sender}'" if sender is not None else ""
        self.client.receive(f"<message xmlns='jabber:client' type='chat'{sender_attr} "
                            f"to='{ALICE}/res' id='m1'{attrs}>{''.join(parts)}</message>")

    def new(self):
        return [data for signal, data in self.host.bridge.emitted
                if signal == MESSAGE_NEW_SIGNAL]

    async def stored(self, count, **filters):
        """Wait for ``count`` signalled messages; the history (oldest first)."""
        await until(lambda: len(self.new()) >= count)
        page = await self.host.call("history_get", profile="alice", order="asc",
                                    **filters)
        return page["messages"]

    def sent_messages(self):
        return [e for e in self.client.output if e.name == "message"]




def assert_logged(lines: list[str], *expected: str) -> None:
    """Each of ``expected`` is in a line of ``lines``, and no line is a traceback."""
    for text in expected:
        assert any(text in line for line in lines), text
    assert not any("Traceback" in line for line in lines)
