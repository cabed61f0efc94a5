"""What a pubsub service does differently from others: its *traits*.

Services differ in what they answer (see the developer documentation): some page with
RSM, some ignore it and answer the whole node; some keep a re-published item at its
place, some move it to the end; some drop items beyond a node's ``max_items`` without
telling.  The cache answers as the node's service would, from the traits recorded with
the node when it was synchronised: those learnt from the service's answers (RSM paging,
cursors) and those of its software, asked once per service domain.
"""

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from twisted.words.protocols.jabber import jid as jabber_jid

from libervia.backend.core.interfaces import Client
from libervia.backend.core.jids import parse_jid
from libervia.backend.core.log import getLogger
from libervia.backend.memory.sqla_mapping import PubsubNode
from libervia.backend.plugins.plugin_xep_0030 import XEP_0030, DiscoInfo
from libervia.backend.plugins.plugin_xep_0092 import XEP_0092
from libervia.backend.plugins.xep_0060.stanzas import NS_ORDER_BY

log = getLogger(__name__)

#: seconds to wait for a service's software name or features
TRAITS_TIMEOUT = 10

#: server software whose behaviour is known (see ServiceTraits.of_software)
KNOWN_SOFTWARE = ("prosody", "ejabberd")


@dataclass(frozen=True)
class ServiceTraits:
    """How a service answers; the defaults are the most common behaviour."""

    #: name of the service's software, if it said
    software: str | None = None
    #: pages with RSM (else it answers the whole node at once)
    rsm: bool = True
    #: supports XEP-0413 (order-by)
    order_by: bool = False
    #: a re-published item moves to the end of the node (else it keeps its place)
    republish_moves: bool = False
    #: items asked by id come back in the order of the request (else the node's)
    ids_in_request_order: bool = False
    #: drops items beyond the node's max_items without a retraction
    silent_trim: bool = False
    #: its RSM cursors are item ids (else they are opaque, ejabberd's time stamps)
    id_cursors: bool = True

    @classmethod
    def of_software(cls, software: str | None, order_by: bool) -> "ServiceTraits":
        """The traits of a software, as far as they are known here."""
        moves = software is not None and "prosody" in software.lower()
        return cls(software=software, order_by=order_by, republish_moves=moves,
                   ids_in_request_order=moves, silent_trim=moves)

    @classmethod
    def from_dict(cls, recorded: dict[str, Any] | None) -> "ServiceTraits":
        """Traits as stored with a node (keys this version does not know are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (recorded or {}).items() if k in known})

    def as_dict(self) -> dict[str, Any]:
        """The traits as stored with a node (JSON)."""
        return asdict(self)

    def learnt(self, **answers: bool) -> "ServiceTraits":
        """These traits, with what the answers of a synchronisation told."""
        return replace(self, **answers)

    @property
    def item_order(self) -> str:
        """The order of the node's items, as the storage names it."""
        return "modification" if self.republish_moves else "creation"


#: traits of a service whose software is unknown, as stored
DEFAULT_TRAITS = ServiceTraits().as_dict()


def node_traits(pubsub_node: PubsubNode) -> ServiceTraits:
    """Traits of a cached node's service, as recorded when it was synchronised."""
    return ServiceTraits.from_dict((pubsub_node.extra or {}).get("traits"))


class TraitsFinder:
    """Asks services what they are, once per domain.

    :param disco: the XEP-0030 plugin
    :param version: the XEP-0092 plugin
    """

    def __init__(self, disco: XEP_0030, version: XEP_0092) -> None:
        self.disco = disco
        self.version = version
        self._known: dict[str, ServiceTraits] = {}

    async def traits(self, client: Client, service: jabber_jid.JID) -> ServiceTraits:
        """What the service's software does differently.

        Asked once per service domain: its software name (XEP-0092, asked to the
        service's domain: the server of an account, or the component itself, never
        the server hosting a component, which may run other software) and whether it
        supports XEP-0413 ordering (service discovery).  Whether it pages with RSM is
        learnt from the answers while synchronising.
        """
        known = self._known.get(service.host)
        if known is not None:
            return known
        software = await self._software(client, service.host)
        info = await self._disco_info(client, service)
        if software is None:
            # servers not answering XEP-0092 (Prosody without mod_version) still name
            # themselves in their service discovery identities
            names = info.names
            if service.user or service.resource:
                names += (await self._disco_info(client, parse_jid(service.host))).names
            software = next((n for n in names if _known_software(n)), None)
        traits = ServiceTraits.of_software(software, NS_ORDER_BY in info.features)
        self._known[service.host] = traits
        log.debug("traits of {service}: {traits}", service=service.host, traits=traits)
        return traits

    async def _software(self, client: Client, domain: str) -> str | None:
        try:
            answer = await self.version.get_version(client, parse_jid(domain),
                                                    timeout=TRAITS_TIMEOUT)
        except Exception as e:
            log.debug("no software version from {domain}: {error}", domain=domain,
                      error=e)
            return None
        return answer.name

    async def _disco_info(self, client: Client, entity: jabber_jid.JID) -> DiscoInfo:
        """What an entity says of itself (nothing if it does not answer)."""
        try:
            return await self.disco.get_info(client, entity, timeout=TRAITS_TIMEOUT)
        except Exception:
            return DiscoInfo()


def _known_software(name: str) -> bool:
    lowered = name.lower()
    return any(known in lowered for known in KNOWN_SOFTWARE)


