"""RFC 6121 roster, with roster versioning (XEP-0237) and subscriptions, for every
profile.

Its modules, each importing only those before it: ``stanzas`` reads and builds the
roster's XML, ``operations`` holds the handler of each stream and what other plugins
call (:class:`Roster`), ``bridge_api`` the ``roster_*`` and ``subscription_*`` bridge
methods, and ``plugin`` the plugin's declaration (``host.plugins["ROSTER"]``).  See
``doc/developer/presence_roster.rst``.
"""

from libervia.backend.plugins.roster.operations import (
    MAX_PENDING,
    ROSTER_CHANGED_SIGNAL,
    SUBSCRIPTION_REQUEST_SIGNAL,
    Roster,
    RosterHandler,
)
from libervia.backend.plugins.roster.plugin import PLUGIN_INFO, RosterPlugin
from libervia.backend.plugins.roster.stanzas import (
    NS_ROSTER,
    NS_ROSTER_VER,
    InvalidRoster,
    RosterError,
)

__all__ = [
    "MAX_PENDING", "NS_ROSTER", "NS_ROSTER_VER", "PLUGIN_INFO", "ROSTER_CHANGED_SIGNAL",
    "SUBSCRIPTION_REQUEST_SIGNAL", "InvalidRoster", "Roster", "RosterError",
    "RosterHandler", "RosterPlugin",
]
