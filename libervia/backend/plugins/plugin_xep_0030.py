"""XEP-0030: Service Discovery, asking other entities what they are and hold.

Other plugins ask here, never with their own IQs: :meth:`XEP_0030.get_info` gives an
entity's identities, features and extension forms (XEP-0128), :meth:`XEP_0030.get_items`
the items it lists (a server's components, a pubsub node's item ids...).  Answers come
from anyone: what is malformed in them is left out, never raised.

Answering other entities' requests (and entity capabilities, XEP-0115) comes with the
presence layer.
"""

from dataclasses import dataclass, field

from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import data_form

from libervia.backend.core.constants import C
from libervia.backend.core.interfaces import Client, Host
from libervia.backend.core.log import getLogger
from libervia.backend.xmpp.iq import IQRequest

log = getLogger(__name__)

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"

#: seconds to wait for an answer
DEFAULT_TIMEOUT = 10

PLUGIN_INFO = {
    "name": "Service discovery",
    "import_name": "XEP-0030",
    "type": C.PLUG_TYPE_XEP,
    "modes": list(C.PLUG_MODE_BOTH),
    "protocols": ["XEP-0030", "XEP-0128"],
    "dependencies": [],
    "recommendations": [],
    "main": "XEP_0030",
    "handler": False,
    "description": "Service discovery: what an entity is, what it supports and holds.",
}


@dataclass(frozen=True)
class Identity:
    """One identity of an entity (``category``/``type``, e.g. ``pubsub``/``service``)."""

    category: str
    type: str
    name: str | None = None


@dataclass
class DiscoInfo:
    """What an entity said of itself (disco#info)."""

    identities: list[Identity] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    #: extension forms (XEP-0128) by their FORM_TYPE
    forms: dict[str, data_form.Form] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """The names its identities give (a server's software often says its name
        there)."""
        return [i.name for i in self.identities if i.name]

    @classmethod
    def from_element(cls, query: domish.Element | None) -> "DiscoInfo":
        """Parse a ``<query xmlns='disco#info'/>``; a missing one gives nothing."""
        info = cls()
        if query is None:
            return info
        for identity in query.elements(NS_DISCO_INFO, "identity"):
            category, type_ = identity.getAttribute("category"), identity.getAttribute("type")
            if category and type_:
                info.identities.append(Identity(category, type_,
                                                identity.getAttribute("name") or None))
        info.features = [f["var"] for f in query.elements(NS_DISCO_INFO, "feature")
                         if f.getAttribute("var")]
        for form_elt in query.elements(data_form.NS_X_DATA, "x"):
            try:
                form = data_form.Form.fromElement(form_elt)
            except Exception as e:  # anything the sender got wrong in its form
                log.debug("ignoring an invalid extension form: {error}", error=e)
                continue
            if form.formNamespace:
                info.forms.setdefault(form.formNamespace, form)
        return info


@dataclass(frozen=True)
class DiscoItem:
    """One item an entity lists (disco#items).

    ``jid`` is required by the protocol, but an item without a valid one is kept (with
    ``None``): a caller counting items (the ids of a pubsub node) must see them all.
    """

    jid: jabber_jid.JID | None
    node: str | None = None
    name: str | None = None


class XEP_0030:  # noqa: N801
    """Service discovery requests; ``host.plugins["XEP-0030"]``."""

    def __init__(self, host: Host) -> None:
        self.host = host

    @staticmethod
    def _query(namespace: str, node: str | None) -> domish.Element:
        query = domish.Element((namespace, "query"))
        if node:
            query["node"] = node
        return query

    async def get_info(self, client: Client, entity: jabber_jid.JID, node: str | None = None,
                       timeout: float | None = DEFAULT_TIMEOUT) -> DiscoInfo:
        """What ``entity`` (or one of its nodes) is and supports.

        :raise twisted.words.protocols.jabber.error.StanzaError: the entity answered
            with an error (``item-not-found`` for a node it does not have)
        :raise twisted.internet.defer.TimeoutError: no answer within ``timeout`` seconds
        """
        iq = await client.request(IQRequest(entity, "get",
                                            self._query(NS_DISCO_INFO, node), timeout))
        return DiscoInfo.from_element(next(iq.elements(NS_DISCO_INFO, "query"), None))

    async def get_items(self, client: Client, entity: jabber_jid.JID,
                        node: str | None = None,
                        timeout: float | None = DEFAULT_TIMEOUT) -> list[DiscoItem]:
        """The items ``entity`` (or one of its nodes) lists, in its order.

        :raise twisted.words.protocols.jabber.error.StanzaError: the entity answered
            with an error
        :raise twisted.internet.defer.TimeoutError: no answer within ``timeout`` seconds
        """
        iq = await client.request(IQRequest(entity, "get",
                                            self._query(NS_DISCO_ITEMS, node), timeout))
        query = next(iq.elements(NS_DISCO_ITEMS, "query"), None)
        items = []
        for item in query.elements(NS_DISCO_ITEMS, "item") if query is not None else ():
            items.append(DiscoItem(_jid(item.getAttribute("jid")),
                                   item.getAttribute("node") or None,
                                   item.getAttribute("name") or None))
        return items


def _jid(text: str | None) -> jabber_jid.JID | None:
    """A JID an entity gave, ``None`` if it gave none or an invalid one."""
    if not text:
        return None
    try:
        return jabber_jid.JID(text)
    except jabber_jid.InvalidFormat:
        return None
