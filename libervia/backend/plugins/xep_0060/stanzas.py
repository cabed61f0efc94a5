"""XEP-0060 stanzas: every request built, and every answer read, in one place.

A :class:`PubsubRequest` names its *verb* (``items``, ``publish``, ``subscribe``...);
the table :data:`VERBS` gives each verb its IQ type and the namespace of its
``<pubsub/>`` element, and the request adds what the verb carries (item ids, RSM, a
form of options...).  Answers are read with the ``parse_*`` functions, which take what
a service sends without trusting it: what is missing gives an empty answer, never an
exception.
"""

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from twisted.words.protocols.jabber import error as jabber_error
from twisted.words.protocols.jabber import jid as jabber_jid
from twisted.words.xish import domish
from wokkel import data_form

from libervia.backend.core.exceptions import BackendError, NotFound
from libervia.backend.core.log import getLogger
from libervia.backend.core.xml_tools import NOT_XML_CHAR, XMLError, parse_xml
from libervia.backend.plugins.plugin_xep_0059 import (
    RSMError,
    RSMRequest,
    RSMResponse,
    find_set,
)
from libervia.backend.xmpp.iq import DEFAULT_TIMEOUT, IQRequest

log = getLogger(__name__)

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_EVENT = NS_PUBSUB + "#event"
NS_PUBSUB_OWNER = NS_PUBSUB + "#owner"
NS_PUBSUB_ERRORS = NS_PUBSUB + "#errors"
NS_PUBSUB_META_DATA = NS_PUBSUB + "#meta-data"
NS_PUBSUB_NODE_CONFIG = NS_PUBSUB + "#node_config"
NS_PUBSUB_PUBLISH_OPTIONS = NS_PUBSUB + "#publish-options"
NS_PUBSUB_SUBSCRIBE_OPTIONS = NS_PUBSUB + "#subscribe_options"
NS_ORDER_BY = "urn:xmpp:order-by:1"  # XEP-0413

#: orders a service supporting XEP-0413 knows
OrderBy = Literal["creation", "modification"]
ORDER_BY: tuple[str, ...] = get_args(OrderBy)

#: verb -> (IQ type, namespace of <pubsub/>, name of the verb's element)
VERBS: dict[str, tuple[str, str, str]] = {
    "items": ("get", NS_PUBSUB, "items"),
    "publish": ("set", NS_PUBSUB, "publish"),
    "retract": ("set", NS_PUBSUB, "retract"),
    "create": ("set", NS_PUBSUB, "create"),
    "subscribe": ("set", NS_PUBSUB, "subscribe"),
    "unsubscribe": ("set", NS_PUBSUB, "unsubscribe"),
    "subscriptions": ("get", NS_PUBSUB, "subscriptions"),
    "delete": ("set", NS_PUBSUB_OWNER, "delete"),
    "purge": ("set", NS_PUBSUB_OWNER, "purge"),
    "configure_get": ("get", NS_PUBSUB_OWNER, "configure"),
    "configure_set": ("set", NS_PUBSUB_OWNER, "configure"),
}

#: verbs whose options go in a form beside the verb's element: (wrapper, FORM_TYPE)
_OPTION_FORMS = {
    "publish": ("publish-options", NS_PUBSUB_PUBLISH_OPTIONS),
    "create": ("configure", NS_PUBSUB_NODE_CONFIG),
    "subscribe": ("options", NS_PUBSUB_SUBSCRIBE_OPTIONS),
}


class PubsubError(BackendError):
    """A pubsub request failed; the message carries the service's error condition."""

    def __init__(self, message: str, condition: str | None = None) -> None:
        super().__init__(message)
        self.condition = condition


class InvalidRequest(PubsubError, ValueError):
    """The request is invalid before anything is sent (bad JID, node, XML...)."""


class ItemNotFound(PubsubError, NotFound):
    """The node or the item does not exist on the service."""


def pubsub_error(exc: BaseException, service: str, node: str | None) -> BaseException:
    """Turn a stanza error into a PubsubError saying which node and why."""
    if not isinstance(exc, jabber_error.StanzaError):
        return exc
    where = f"node {node!r} on {service}" if node else service
    text = f": {exc.text}" if exc.text else ""
    if exc.condition == "item-not-found":
        return ItemNotFound(f"{where} not found{text}", exc.condition)
    return PubsubError(f"pubsub request to {where} failed: {exc.condition}{text}",
                       exc.condition)




#: longest node name, item id or subscription id sent (characters)
MAX_ID = 1024


def check_text(value: Any, what: str, max_length: int | None = MAX_ID) -> str:
    """``value`` if it can go into a stanza: a non-empty string XML can carry.

    :raise InvalidRequest: not a string, empty, too long, or with characters XML can't
        carry (sent, they would make the server close the stream)
    """
    if (not isinstance(value, str) or not value
            or (max_length is not None and len(value) > max_length)
            or NOT_XML_CHAR.search(value)):
        limit = f" ({max_length} characters max)" if max_length is not None else ""
        raise InvalidRequest(f"{what} must be a non-empty string{limit} of characters "
                             "XML allows (no control character)")
    return value


def check_node(node: Any) -> str:
    """``node`` if it can be a node name.

    :raise InvalidRequest: not a string, empty, too long, or with characters XML can't
        carry
    """
    return check_text(node, "a node name")


def check_item_ids(item_ids: Any) -> list[str]:
    """``item_ids`` if it is a list of item ids that can be sent.

    :raise InvalidRequest: not a list, or an id that can't be one (see
        :func:`check_text`)
    """
    if not isinstance(item_ids, (list, tuple)):
        raise InvalidRequest("item ids must be a list of strings")
    return [check_text(item_id, "an item id") for item_id in item_ids]


def check_options(options: Any) -> dict[str, Any] | None:
    """``options`` if they can be sent as a form: names to strings, numbers, booleans
    or lists of strings and numbers.

    :raise InvalidRequest: anything else, or a text XML can't carry
    """
    if options is None:
        return None
    if not isinstance(options, dict):
        raise InvalidRequest("options must be an object of option names to values")
    for name, value in options.items():
        check_text(name, "an option name")
        values = value if isinstance(value, (list, tuple)) else [value]
        for one in values:
            if not isinstance(one, (str, int, float)):
                raise InvalidRequest(f"option {name!r} must be a string, a number, a "
                                     "boolean or a list of strings")
            if isinstance(one, str) and one:
                check_text(one, f"option {name!r}", max_length=None)
    return options


def form_values(form: data_form.Form) -> dict[str, Any]:
    """Values of a data form as plain data (lists for multi-valued fields)."""
    values: dict[str, Any] = {}
    for name, form_field in form.fields.items():
        if name == "FORM_TYPE":
            continue
        if form_field.fieldType in ("list-multi", "jid-multi", "text-multi"):
            values[name] = [str(v) for v in form_field.values]
        else:
            value = form_field.value
            values[name] = value.full() if isinstance(value, jabber_jid.JID) else value
    return values


def submit_form(namespace: str, options: dict[str, Any]) -> data_form.Form:
    """A form submitting ``options`` (lists become multi-valued, booleans booleans)."""
    form = data_form.Form("submit", formNamespace=namespace)
    for name, value in options.items():
        if isinstance(value, (list, tuple)):
            form.addField(data_form.Field("list-multi", var=name,
                                          values=[str(v) for v in value]))
        elif isinstance(value, bool):
            form.addField(data_form.Field("boolean", var=name, value=value))
        else:
            form.addField(data_form.Field(var=name, value=str(value)))
    return form


@dataclass
class PubsubRequest:
    """One pubsub request, as a service receives it (see :data:`VERBS`).

    Only the fields the verb uses are read: ``item_ids`` (items, retract),
    ``max_items``, ``rsm`` and ``order_by`` (items), ``item`` (publish), ``options``
    (publish, create, subscribe, configure_set), ``subscriber`` and ``subid``
    (subscribe, unsubscribe), ``notify`` (retract).
    """

    verb: str
    service: jabber_jid.JID
    node: str | None = None
    item_ids: list[str] = field(default_factory=list)
    max_items: int | None = None
    rsm: RSMRequest | None = None
    order_by: str | None = None
    item: domish.Element | None = None
    options: dict[str, Any] | None = None
    subscriber: str | None = None
    subid: str | None = None
    notify: bool = False

    def __post_init__(self) -> None:
        # every text that goes into the stanza, checked before anything is built
        if self.verb not in VERBS:
            raise InvalidRequest(f"unknown pubsub verb {self.verb!r}")
        if self.node is not None:
            check_node(self.node)
        self.item_ids = check_item_ids(self.item_ids)
        for what, value in (("a subscriber JID", self.subscriber),
                            ("a subscription id", self.subid)):
            if value is not None:
                check_text(value, what)
        self.options = check_options(self.options)
        if self.rsm is not None:
            for cursor in (self.rsm.after, self.rsm.before):
                if cursor:  # "" is a request for the last page
                    check_text(cursor, "an RSM cursor", max_length=None)

    @property
    def stanza_type(self) -> str:
        return VERBS[self.verb][0]

    def payload(self) -> domish.Element:
        """The ``<pubsub/>`` element of the request."""
        __, namespace, name = VERBS[self.verb]
        pubsub = domish.Element((namespace, "pubsub"))
        verb = pubsub.addElement(name)
        if self.node:
            verb["node"] = self.node
        if self.verb == "items" and self.max_items is not None:
            verb["max_items"] = str(self.max_items)
        if self.verb in ("subscribe", "unsubscribe"):
            verb["jid"] = self.subscriber
            if self.subid:
                verb["subid"] = self.subid
        if self.verb == "retract" and self.notify:
            verb["notify"] = "true"
        for item_id in self.item_ids:
            verb.addElement("item")["id"] = item_id
        if self.verb == "publish" and self.item is not None:
            self.item.uri = self.item.defaultUri = NS_PUBSUB
            verb.addChild(self.item)
        if self.verb == "configure_set" and self.options is not None:
            verb.addChild(submit_form(NS_PUBSUB_NODE_CONFIG, self.options).toElement())
        if self.verb in _OPTION_FORMS and self.options:
            wrapper, form_type = _OPTION_FORMS[self.verb]
            pubsub.addElement(wrapper).addChild(
                submit_form(form_type, self.options).toElement())
        if self.rsm is not None:
            pubsub.addChild(self.rsm.to_element())
        if self.order_by is not None:
            pubsub.addElement((NS_ORDER_BY, "order"))["field"] = self.order_by
        return pubsub

    def iq_request(self, timeout: float | None = DEFAULT_TIMEOUT) -> IQRequest:
        """The IQ to send."""
        return IQRequest(self.service, self.stanza_type, self.payload(), timeout)


# answers


@dataclass
class ItemsResult:
    """Answer of a get-items request.

    :ivar items: ``<item/>`` elements as the service sent them
    :ivar rsm: what the service said about the page (``first``, ``last``, ``index``,
        ``count``), empty without RSM
    :ivar cached: the answer comes from the local cache, not the service
    """

    service: str
    node: str
    items: list[domish.Element] = field(default_factory=list)
    rsm: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def metadata(self) -> dict[str, Any]:
        return {"service": self.service, "node": self.node, "rsm": self.rsm,
                "cached": self.cached, **self.extra}

    def serialise(self) -> dict[str, Any]:
        """JSON form for the bridge: items as XML text.

        :raise PubsubError: an item is nested too deeply to be serialised (domish
            serialises recursively)
        """
        return {"items": self.item_texts(), "metadata": self.metadata}

    def item_texts(self) -> list[str]:
        """The items as XML text (see :meth:`serialise`)."""
        texts = []
        for item in self.items:
            try:
                texts.append(item.toXml())
            except RecursionError:
                raise PubsubError(
                    f"item {item.getAttribute('id')!r} of node {self.node!r} is nested "
                    "too deeply to be sent to frontends; ask for the other items by id",
                    "too-deep",
                ) from None
        return texts


class TextItemsResult(ItemsResult):
    """An answer whose items are held as XML text, as a cache stores them.

    A frontend gets the text as it is (:meth:`serialise`): nothing is parsed to be
    serialised again.  ``items`` parses the texts when first read, and from then on
    the elements are the answer (a caller may change them), as in any
    :class:`ItemsResult`; a text that is not one XML element is left out, and logged.

    The texts must be what ``toXml()`` gave for the items (serialising an element
    parsed from such a text gives the same text back): the answer is then the same,
    whether its items are read as elements or forwarded as text.
    """

    def __init__(self, service: str, node: str, texts: list[str],
                 rsm: dict[str, Any] | None = None, cached: bool = False) -> None:
        super().__init__(service, node, rsm=rsm or {}, cached=cached)
        self._texts: list[str] | None = texts

    @property  # type: ignore[override]
    def items(self) -> list[domish.Element]:
        if self._texts is not None:
            texts, self._texts = self._texts, None
            self._elements = [e for e in map(self._parse, texts) if e is not None]
        return self._elements

    @items.setter
    def items(self, elements: list[domish.Element]) -> None:
        self._texts = None
        self._elements = elements

    def _parse(self, text: str) -> domish.Element | None:
        try:
            return parse_xml(text)
        except XMLError:
            log.error("item text of node {node} is not XML, leaving it out: {text!r}",
                      node=self.node, text=text[:80])
            return None

    def item_texts(self) -> list[str]:
        if self._texts is not None:
            return list(self._texts)
        return super().item_texts()


def _answer(iq: domish.Element, namespace: str = NS_PUBSUB,
            name: str | None = None) -> domish.Element | None:
    """The ``<pubsub/>`` of an answer, or its child ``name``; None if missing."""
    pubsub = next(iq.elements(namespace, "pubsub"), None)
    if pubsub is None or name is None:
        return pubsub
    return next(pubsub.elements(namespace, name), None)


def parse_items(iq: domish.Element, service: jabber_jid.JID, node: str) -> ItemsResult:
    """The items and RSM data of a get-items answer."""
    result = ItemsResult(service.full(), node)
    pubsub = _answer(iq)
    if pubsub is None:
        return result
    items_elt = next(pubsub.elements(NS_PUBSUB, "items"), None)
    if items_elt is not None:
        result.items = list(items_elt.elements(NS_PUBSUB, "item"))
    set_elt = find_set(pubsub)
    if set_elt is not None:
        try:
            result.rsm = RSMResponse.from_element(set_elt).to_dict()
        except RSMError as e:
            log.warn("ignoring invalid RSM answer from {service}: {error}",
                     service=service.full(), error=e)
    return result


def parse_published_id(iq: domish.Element) -> str | None:
    """The id a service gave the item it published, if it said."""
    publish = _answer(iq, name="publish")
    returned = next(publish.elements(NS_PUBSUB, "item"), None) if publish else None
    return returned.getAttribute("id") or None if returned is not None else None


def parse_created_node(iq: domish.Element) -> str | None:
    """The name of a node the service created, if it said."""
    created = _answer(iq, name="create")
    return created.getAttribute("node") or None if created is not None else None


def parse_configuration(iq: domish.Element) -> dict[str, Any]:
    """A node's configuration form, as plain values."""
    configure = _answer(iq, NS_PUBSUB_OWNER, "configure")
    form_elt = next(configure.elements(data_form.NS_X_DATA, "x"), None) if configure else None
    if form_elt is None:
        return {}
    return form_values(data_form.Form.fromElement(form_elt))


def parse_subscription(iq: domish.Element, node: str) -> dict[str, Any]:
    """The subscription a subscribe request gave (subscribed, when the service is
    silent)."""
    subscription = _answer(iq, name="subscription")
    if subscription is None:
        return {"node": node, "state": "subscribed", "subid": None}
    return {"node": subscription.getAttribute("node", node),
            "state": subscription.getAttribute("subscription", "subscribed"),
            "subid": subscription.getAttribute("subid")}


def parse_subscriptions(iq: domish.Element) -> list[dict[str, Any]]:
    """The subscriptions a service lists."""
    pubsub = _answer(iq)
    result = []
    for container in pubsub.elements(NS_PUBSUB, "subscriptions") if pubsub else ():
        for sub in container.elements(NS_PUBSUB, "subscription"):
            result.append({"node": sub.getAttribute("node"),
                           "jid": sub.getAttribute("jid"),
                           "state": sub.getAttribute("subscription"),
                           "subid": sub.getAttribute("subid")})
    return result
