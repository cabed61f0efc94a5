"""``li pubsub``: items, nodes and subscriptions (XEP-0060), and the local cache.

Every command works for a profile (``-p``, see :func:`libervia.cli.base.resolve_profile`)
on a service (``-s``, default: the profile's own account, i.e. PEP).  One module per
concern: :mod:`.items` (get, set, retract), :mod:`.nodes` (``li pubsub node``),
:mod:`.subscriptions`, :mod:`.watch` (events as they come), :mod:`.cache` (``li pubsub
cache``), and :mod:`.common` for what they share (arguments, parameters, rendering of
items).
"""

from __future__ import annotations

from libervia.cli.base import add_group
from libervia.cli.commands.pubsub import cache, items, nodes, subscriptions, watch

TYPE_CHECKING = False  # typing is not imported at run time: li starts faster
if TYPE_CHECKING:
    from typing import Any


def register(subparsers: Any) -> None:
    group = add_group(
        subparsers, "pubsub", help="publish-subscribe: items, nodes, subscriptions, cache",
        description="Publish-subscribe (XEP-0060): get and publish items, manage nodes\n"
        "and subscriptions, and the backend's local cache of nodes.\n\n"
        "-p PROFILE defaults to $LIBERVIA_PROFILE, else to the only profile if there\n"
        "is exactly one; -s SERVICE defaults to the profile's own account (PEP).",
    )
    # in this order in "li pubsub --help"
    items.register(group)
    nodes.register(group)
    subscriptions.register(group)
    watch.register(group)
    cache.register(group)
