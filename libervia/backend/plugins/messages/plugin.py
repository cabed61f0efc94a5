"""The MESSAGES plugin: its declaration, its settings, and the object other plugins
use."""

from libervia.backend.core.config import declare, parse_positive_int
from libervia.backend.core.constants import C
from libervia.backend.plugins.messages.bridge_api import MessagesBridge
from libervia.backend.plugins.messages.operations import Messages
from libervia.backend.plugins.messages.stanzas import NS_SID
from libervia.backend.xmpp.profiles import StorageHost

IMPORT_NAME = "MESSAGES"
SECTION = f"plugin {IMPORT_NAME}"

PLUGIN_INFO = {
    "name": "Messages",
    # a literal, as IMPORT_NAME says: the package map's test reads it from the source
    "import_name": "MESSAGES",
    "type": C.PLUG_TYPE_MISC,
    "modes": [C.PLUG_MODE_CLIENT],
    "protocols": ["RFC 6121", "XEP-0359", "XEP-0203"],
    # the account's server is asked (disco) whether its stanza-ids can be trusted;
    # JIDs are read as the presence plugin reads them
    "dependencies": ["PRESENCE", "XEP-0030"],
    "recommendations": [],
    "main": "MessagesPlugin",
    "handler": True,
    "features": [NS_SID],
    "description": "Messages: send and receive them, and keep their history.",
}

declare(SECTION, "max_body", parse_positive_int, 100_000,
        "Characters of a message's bodies (and of its subjects): longer received ones "
        "are cut, and stored flagged truncated; longer ones are not sent.")


class MessagesPlugin(Messages):
    """The messages and the history, and their bridge methods;
    ``host.plugins["MESSAGES"]``."""

    def __init__(self, host: StorageHost) -> None:
        super().__init__(host, host.config.plugin_section(IMPORT_NAME).get_int("max_body"))
        MessagesBridge(host, self).register()
