"""XEP-0280 message carbons: the messages the account's other devices send and receive,
copied to this one, stored in the history as if they had come here.

At each connection, once the messages plugin knows whether stanza-ids can be trusted
(its ``message_stream`` point), the account's server is asked whether it offers
carbons; if it does, they are enabled before any message of the stream is read.  A
carbon is a ``<message/>`` from the account's bare JID wrapping a forwarded one
(XEP-0297): the wrapped message is handed to the messages plugin, which stores it with
its direction (``sent`` carbons: the account's; ``received``: a contact's) and signals
it ``via`` ``carbon``.  Copies it already holds (the same stanza-id, or the same
origin-id from the same sender) are not stored again.

A carbon from anyone but the account's bare JID is forged (RFC 6120 lets anyone send
any message to the profile): it is refused with a log line, as is a carbon whose
wrapped message is missing, a carbon in a carbon, or a ``sent`` carbon of a message
that is not the account's (and a ``received`` one of a message not to it).
"""

from datetime import UTC, datetime

from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from libervia.backend.core.constants import C
from libervia.backend.core.interfaces import Client
from libervia.backend.core.jids import jid_or_none
from libervia.backend.core.log import getLogger
from libervia.backend.plugins.messages import (
    TRIGGER_RECEIVED,
    TRIGGER_STREAM,
    MessageReceived,
    Messages,
)
from libervia.backend.plugins.messages.stanzas import NS_CLIENT
from libervia.backend.xmpp.iq import IQRequest
from libervia.backend.xmpp.profiles import StorageHost

log = getLogger(__name__)

NS_CARBONS = "urn:xmpp:carbons:2"
#: stanza forwarding (XEP-0297)
NS_FORWARD = "urn:xmpp:forward:0"
#: seconds the server may take to answer the enabling request
ENABLE_TIMEOUT = 30.0

PLUGIN_INFO = {
    "name": "Message carbons",
    "import_name": "XEP-0280",
    "type": C.PLUG_TYPE_XEP,
    "modes": [C.PLUG_MODE_CLIENT],
    "protocols": ["XEP-0280", "XEP-0297"],
    "dependencies": ["MESSAGES", "XEP-0030"],
    "recommendations": [],
    "main": "XEP_0280",
    "handler": False,
    "features": [NS_CARBONS],
    "description": "Message carbons: the messages of the account's other devices, "
                   "in the history too.",
}


class XEP_0280:  # noqa: N801
    """Message carbons; ``host.plugins["XEP-0280"]``."""

    def __init__(self, host: StorageHost) -> None:
        self.host = host
        self.messages: Messages = host.plugins["MESSAGES"]
        #: whether carbons are enabled on the stream of each connected profile
        self.enabled: dict[str, bool] = {}
        host.trigger.add(TRIGGER_STREAM, self._on_stream)
        # before anything else reads the wrapper
        host.trigger.add(TRIGGER_RECEIVED, self._on_received, priority=1000)

    async def _on_stream(self, client: Client) -> bool:
        name = client.profile.name
        self.enabled[name] = False
        disco = self.host.plugins["XEP-0030"]
        server = jabber_jid.JID(client.jid.host)
        try:
            info = await disco.get_info(client, server)
        except Exception as e:
            log.warn("profile {profile}: the server's features are unknown ({error}): "
                     "carbons are not enabled", profile=name,
                     error=str(e) or type(e).__name__)
            return True
        if NS_CARBONS not in info.features:
            log.info("profile {profile}: the server offers no message carbons",
                     profile=name)
            return True
        try:
            await client.request(IQRequest(None, "set", domish.Element(
                (NS_CARBONS, "enable")), ENABLE_TIMEOUT))
        except Exception as e:
            log.warn("profile {profile}: message carbons could not be enabled ({error})",
                     profile=name, error=str(e) or type(e).__name__)
            return True
        self.enabled[name] = True
        log.info("profile {profile}: message carbons enabled", profile=name)
        return True

    def profile_disconnected(self, client: Client) -> None:
        self.enabled.pop(client.profile.name, None)

    async def _on_received(self, client: Client, event: MessageReceived) -> bool:
        carbon = next((c for c in event.element.elements()
                       if c.uri == NS_CARBONS and c.name in ("received", "sent")), None)
        if carbon is None:
            return True
        name = client.profile.name
        account = client.jid.userhost()
        sender = event.read.sender
        if sender is not None and sender.full() != account:
            log.warn("profile {profile}: forged carbon from {sender} refused: only the "
                     "account may send one", profile=name, sender=sender.full()[:200])
            return False
        inner = _forwarded(carbon)
        reason = None
        if inner is None:
            reason = "no forwarded message"
        elif any(c.uri == NS_CARBONS for c in inner.elements()):
            reason = "a carbon in a carbon"
        else:
            party = jid_or_none(inner.getAttribute("from" if carbon.name == "sent" else "to"))
            if party is None or party.userhost() != account:
                reason = (f"a {carbon.name} carbon of a message "
                          f"{'not from' if carbon.name == 'sent' else 'not to'} the account")
        if reason is not None:
            log.warn("profile {profile}: carbon refused: {reason}", profile=name,
                     reason=reason)
            return False
        received = datetime.fromtimestamp(self.host.reactor.seconds(), UTC)
        await self.messages.receive_element(client, inner, received, "carbon")
        # the wrapper itself is no message of the history
        return False


def _forwarded(carbon: domish.Element) -> domish.Element | None:
    forwarded = next((c for c in carbon.elements() if c.uri == NS_FORWARD
                      and c.name == "forwarded"), None)
    if forwarded is None:
        return None
    return next((c for c in forwarded.elements() if c.name == "message"
                 and c.uri == NS_CLIENT), None)
