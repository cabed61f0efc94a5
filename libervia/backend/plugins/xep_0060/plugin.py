"""The XEP-0060 plugin: its declaration, and the object other plugins use."""

from libervia.backend.core.constants import C
from libervia.backend.core.interfaces import Host
from libervia.backend.plugins.xep_0060.bridge_api import PubsubBridge
from libervia.backend.plugins.xep_0060.operations import Pubsub

PLUGIN_INFO = {
    "name": "Publish-Subscribe",
    "import_name": "XEP-0060",
    "type": C.PLUG_TYPE_XEP,
    "modes": list(C.PLUG_MODE_BOTH),
    "protocols": ["XEP-0060", "XEP-0413"],
    # services send notifications to the subscribed bare JID, which servers deliver
    # only to available resources: without the initial presence the presence plugin
    # sends, no event would ever arrive (measured on Prosody and ejabberd)
    "dependencies": ["XEP-0030", "XEP-0059", "PRESENCE"],
    "recommendations": [],
    "main": "XEP_0060",
    "handler": True,
    "description": "Publish-subscribe: items, nodes, subscriptions and events.",
}


class XEP_0060(Pubsub):  # noqa: N801
    """The pubsub operations, and their ``pubsub_*`` bridge methods;
    ``host.plugins["XEP-0060"]``."""

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        PubsubBridge(host, self).register()
