"""The ROSTER plugin: its declaration, and the object other plugins use."""

from libervia.backend.core.constants import C
from libervia.backend.plugins.roster.bridge_api import RosterBridge
from libervia.backend.plugins.roster.operations import Roster
from libervia.backend.xmpp.profiles import StorageHost

PLUGIN_INFO = {
    "name": "Roster",
    "import_name": "ROSTER",
    "type": C.PLUG_TYPE_MISC,
    "modes": [C.PLUG_MODE_CLIENT],
    "protocols": ["RFC 6121", "XEP-0237"],
    # the roster is fetched before the initial presence (the presence plugin's
    # presence_initial point), and shows each contact's presence
    "dependencies": ["PRESENCE"],
    "recommendations": [],
    "main": "RosterPlugin",
    "handler": True,
    "description": "Roster: the contacts of a profile, and subscriptions to their "
                   "presence.",
}


class RosterPlugin(Roster):
    """The roster operations, and their ``roster_*`` and ``subscription_*`` bridge
    methods; ``host.plugins["ROSTER"]``."""

    def __init__(self, host: StorageHost) -> None:
        super().__init__(host)
        RosterBridge(host, self).register()
