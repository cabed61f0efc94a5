"""XEP-0060: Publish-Subscribe, the client side, for every profile.

Its modules, each importing only those before it: ``stanzas`` builds requests and
reads answers, ``events`` turns notifications into event objects for the triggers,
``operations`` holds what other plugins call, ``bridge_api`` the ``pubsub_*`` bridge
methods, and ``plugin`` the plugin's declaration (``host.plugins["XEP-0060"]``).
"""

from libervia.backend.plugins.xep_0060.events import (
    ConfigurationEvent,
    DeleteEvent,
    ItemsEvent,
    PubsubEvent,
    PubsubHandler,
    PurgeEvent,
    RetractEvent,
)
from libervia.backend.plugins.xep_0060.operations import (
    TRIGGER_GET_ITEMS,
    TRIGGER_PUBLISH,
    ItemsQuery,
    Publication,
    Pubsub,
)
from libervia.backend.plugins.xep_0060.plugin import PLUGIN_INFO, XEP_0060
from libervia.backend.plugins.xep_0060.stanzas import (
    NS_PUBSUB,
    InvalidRequest,
    IQRequest,
    ItemNotFound,
    ItemsResult,
    PubsubError,
    check_node,
)

__all__ = [
    "NS_PUBSUB", "PLUGIN_INFO", "TRIGGER_GET_ITEMS", "TRIGGER_PUBLISH", "XEP_0060",
    "ConfigurationEvent", "DeleteEvent", "IQRequest", "InvalidRequest", "ItemNotFound",
    "ItemsEvent", "ItemsQuery", "ItemsResult", "Publication", "Pubsub", "PubsubError",
    "PubsubEvent", "PubsubHandler", "PurgeEvent", "RetractEvent", "check_node",
]
