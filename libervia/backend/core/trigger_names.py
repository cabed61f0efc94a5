"""Names of the trigger points the kernel and the application fire.

A plugin registers on them with ``host.trigger.add(trigger_names.BACKEND_STATUS, cb)``
rather than with a string literal, so that a typo fails at import time.  Each constant
says with which arguments its callbacks are called and what their answer means.

The XMPP connection stack fires no trigger point of its own: plugins follow a profile's
connection through the hooks of :mod:`libervia.backend.core.interfaces`
(``profile_connected``...).  Points fired by plugins are named by those plugins
(``XEP-0060_items``...).
"""

#: plain point fired each time the backend's status changes, with the new status
#: (``starting``, ``ready``, ``stopping``, ``stopped`` or ``failed``); callbacks
#: return ``True`` (the status changes whatever they answer)
BACKEND_STATUS = "backend_status"
