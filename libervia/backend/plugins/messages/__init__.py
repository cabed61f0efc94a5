"""RFC 6121 messages (chat, normal, headline) and their history, for every profile.

Its modules, each importing only those before it: ``stanzas`` reads and builds the
message's XML, ``operations`` holds the handler of each stream and what other plugins
call (:class:`Messages`), ``bridge_api`` the ``message_*`` and ``history_get`` bridge
methods, and ``plugin`` the plugin's declaration (``host.plugins["MESSAGES"]``).  See
``doc/developer/messages.rst``.
"""

from libervia.backend.plugins.messages.operations import (
    MESSAGE_NEW_SIGNAL,
    TRIGGER_RECEIVED,
    TRIGGER_SEND,
    TRIGGER_STORED,
    TRIGGER_STREAM,
    MessageReceived,
    Messages,
    MessageSending,
    MessagesHandler,
)
from libervia.backend.plugins.messages.plugin import PLUGIN_INFO, MessagesPlugin
from libervia.backend.plugins.messages.stanzas import (
    NS_SID,
    InvalidMessage,
    MessageCancelled,
    MessageError,
)

__all__ = [
    "MESSAGE_NEW_SIGNAL", "NS_SID", "PLUGIN_INFO", "TRIGGER_RECEIVED", "TRIGGER_SEND",
    "TRIGGER_STORED", "TRIGGER_STREAM", "InvalidMessage", "MessageCancelled", "MessageError",
    "MessageReceived", "MessageSending", "Messages", "MessagesHandler", "MessagesPlugin",
]
