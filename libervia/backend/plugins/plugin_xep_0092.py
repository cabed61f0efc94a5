"""XEP-0092: Software Version, asking an entity which software it runs.

Plugins that adapt to a peer's known behaviour (the pubsub cache, for services that
differ) ask here.  Answering other entities' requests comes with the presence layer.
"""

from dataclasses import dataclass

from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish

from libervia.backend.core.constants import C
from libervia.backend.core.interfaces import Client, Host
from libervia.backend.xmpp.iq import IQRequest

NS_VERSION = "jabber:iq:version"

#: seconds to wait for an answer
DEFAULT_TIMEOUT = 10

PLUGIN_INFO = {
    "name": "Software version",
    "import_name": "XEP-0092",
    "type": C.PLUG_TYPE_XEP,
    "modes": list(C.PLUG_MODE_BOTH),
    "protocols": ["XEP-0092"],
    "dependencies": [],
    "recommendations": [],
    "main": "XEP_0092",
    "handler": False,
    "description": "Software version: which software an entity runs.",
}


@dataclass(frozen=True)
class SoftwareVersion:
    """What an entity said of its software; each part may be missing."""

    name: str | None
    version: str | None = None
    os: str | None = None


def _text(query: domish.Element, name: str) -> str | None:
    elt = next(query.elements(NS_VERSION, name), None)
    return (str(elt).strip() or None) if elt is not None else None


class XEP_0092:  # noqa: N801
    """Software version requests; ``host.plugins["XEP-0092"]``."""

    def __init__(self, host: Host) -> None:
        self.host = host

    async def get_version(self, client: Client, entity: jabber_jid.JID,
                          timeout: float | None = DEFAULT_TIMEOUT) -> SoftwareVersion:
        """The software ``entity`` runs (its parts ``None`` when it does not say).

        :raise twisted.words.protocols.jabber.error.StanzaError: the entity answered
            with an error (``service-unavailable``: it does not tell)
        :raise twisted.internet.defer.TimeoutError: no answer within ``timeout`` seconds
        """
        iq = await client.request(IQRequest(
            entity, "get", domish.Element((NS_VERSION, "query")), timeout))
        query = next(iq.elements(NS_VERSION, "query"), None)
        if query is None:
            return SoftwareVersion(None)
        return SoftwareVersion(_text(query, "name"), _text(query, "version"),
                               _text(query, "os"))
