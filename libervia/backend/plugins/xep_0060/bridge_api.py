"""The XEP-0060 bridge methods (``pubsub_*``), for frontends."""

from typing import Any

from twisted.words.xish import domish

from libervia.backend.core.interfaces import Client, Host
from libervia.backend.core.xml_tools import XMLError, parse_xml
from libervia.backend.plugins.plugin_xep_0059 import RSMError, RSMRequest
from libervia.backend.plugins.xep_0060.events import EVENT_SIGNAL, EVENT_SIGNAL_DOC
from libervia.backend.plugins.xep_0060.operations import Pubsub
from libervia.backend.plugins.xep_0060.stanzas import (
    NS_PUBSUB,
    InvalidRequest,
    OrderBy,
    PubsubError,
)

METHODS = ("get", "publish", "retract", "node_create", "node_delete", "node_purge",
           "node_info", "node_configure", "node_list", "subscribe", "unsubscribe",
           "subscriptions")


class PubsubBridge:
    """``pubsub_get``, ``pubsub_publish``... as the bridge calls them.

    :param pubsub: the operations they call
    """

    def __init__(self, host: Host, pubsub: Pubsub) -> None:
        self.host = host
        self.pubsub = pubsub

    def register(self) -> None:
        """Register the methods and the ``pubsub_event`` signal on the host's bridge."""
        bridge = self.host.bridge
        for name in METHODS:
            bridge.register_method(f"pubsub_{name}", getattr(self, name))
        bridge.register_signal(EVENT_SIGNAL, EVENT_SIGNAL_DOC)

    def _client(self, profile: str) -> Client:
        return self.host.clients.get(profile)

    async def get(
        self, profile: str, service: str | None, node: str, max_items: int | None = None,
        item_ids: list[str] | None = None, rsm: dict[str, Any] | None = None,
        order_by: OrderBy | None = None, use_cache: bool = True,
    ) -> dict[str, Any]:
        """Get items of a node (from the cache when it is synchronised)."""
        try:
            rsm_request = RSMRequest.from_dict(rsm) if rsm else None
        except RSMError as e:
            raise InvalidRequest(str(e)) from None
        result = await self.pubsub.get_items(self._client(profile), service, node,
                                             max_items, item_ids, rsm_request, order_by,
                                             use_cache)
        return result.serialise()

    async def publish(self, profile: str, service: str | None, node: str,
                      items: list[str], options: dict[str, Any] | None = None
                      ) -> list[str]:
        """Publish items given as XML text (``<item/>`` or a bare payload)."""
        if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
            raise InvalidRequest("items must be a list of XML texts")
        elements = []
        for text in items:
            try:
                element = parse_xml(text)
            except XMLError as e:
                raise InvalidRequest(str(e)) from None
            if element.name != "item":
                item = domish.Element((NS_PUBSUB, "item"))
                item.addChild(element)
                element = item
            elements.append(element)
        return await self.pubsub.publish(self._client(profile), service, node, elements,
                                         options)

    async def retract(self, profile: str, service: str | None, node: str,
                      item_ids: list[str], notify: bool = True) -> None:
        """Retract items."""
        await self.pubsub.retract_items(self._client(profile), service, node, item_ids,
                                        notify)

    async def node_create(self, profile: str, service: str | None,
                          node: str | None = None,
                          options: dict[str, Any] | None = None) -> str:
        """Create a node."""
        return await self.pubsub.create_node(self._client(profile), service, node,
                                             options)

    async def node_delete(self, profile: str, service: str | None, node: str) -> None:
        """Delete a node."""
        await self.pubsub.delete_node(self._client(profile), service, node)

    async def node_purge(self, profile: str, service: str | None, node: str) -> None:
        """Retract every item of a node."""
        await self.pubsub.purge_node(self._client(profile), service, node)

    async def node_info(self, profile: str, service: str | None, node: str
                        ) -> dict[str, Any]:
        """Node metadata (service discovery) and, if allowed, its configuration."""
        client = self._client(profile)
        info = await self.pubsub.get_node_metadata(client, service, node)
        try:
            info["configuration"] = await self.pubsub.get_node_configuration(
                client, service, node)
        except PubsubError as e:
            info["configuration"] = None
            info["configuration_error"] = e.condition
        return info

    async def node_configure(self, profile: str, service: str | None, node: str,
                             options: dict[str, Any]) -> None:
        """Change a node's configuration."""
        await self.pubsub.configure_node(self._client(profile), service, node, options)

    async def node_list(self, profile: str, service: str | None) -> list[dict[str, Any]]:
        """The nodes of a service (disco#items): node, name, jid."""
        return await self.pubsub.list_nodes(self._client(profile), service)

    async def subscribe(self, profile: str, service: str | None, node: str,
                        options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Subscribe the profile to a node."""
        return await self.pubsub.subscribe(self._client(profile), service, node, options)

    async def unsubscribe(self, profile: str, service: str | None, node: str,
                          subid: str | None = None) -> None:
        """Unsubscribe the profile from a node."""
        await self.pubsub.unsubscribe(self._client(profile), service, node, subid)

    async def subscriptions(self, profile: str, service: str | None,
                            node: str | None = None) -> list[dict[str, Any]]:
        """The profile's subscriptions on a service."""
        return await self.pubsub.subscriptions(self._client(profile), service, node)
