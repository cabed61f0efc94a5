"""Transparent pubsub cache: pubsub nodes kept in the database and answered from there.

See :mod:`.plugin` for how the package is laid out, and the developer documentation
(``doc/developer/pubsub_cache.rst``) for what the cache guarantees.
"""

from libervia.backend.plugins.pubsub_cache.analysers import Analyser, InvalidAnalyser
from libervia.backend.plugins.pubsub_cache.events import MISSED_CHECK_MAX_DELAY
from libervia.backend.plugins.pubsub_cache.plugin import PLUGIN_INFO, PubsubCache
from libervia.backend.plugins.pubsub_cache.state import CacheError
from libervia.backend.plugins.pubsub_cache.traits import (
    DEFAULT_TRAITS,
    ServiceTraits,
    node_traits,
)

__all__ = ["DEFAULT_TRAITS", "MISSED_CHECK_MAX_DELAY", "PLUGIN_INFO", "Analyser",
           "CacheError", "InvalidAnalyser", "PubsubCache", "ServiceTraits", "node_traits"]
