"""The backend's storage: a runner and one component per domain.

``from libervia.backend.memory.storage import Storage`` gives the connector; callers
reach the data through its components (``storage.profiles``, ``storage.pubsub``,
``storage.search``).  Modules, from the bottom up:

* :mod:`.runner`: :class:`StorageRunner`, the threads' calls, transactions (session,
  connection, driver cursor), bounded retries, call names and timings, start, stop
  and migration; :class:`StorageError`, :class:`StorageUnavailable`;
* :mod:`.threads`: the storage's threads (:class:`WorkerThreads`);
* :mod:`.memo`: what reads remember as long as nothing is written (:class:`ReadMemo`);
* :mod:`.profiles`: ``storage.profiles``, profiles, parameters and private values;
* :mod:`.item_reads`: the one read path of cached items (:class:`ItemData`,
  :class:`ItemsPage`, :class:`OrderBy`);
* :mod:`.pubsub`: ``storage.pubsub``, cached nodes and items;
* :mod:`.search_query`: search queries and their validation;
* :mod:`.search`: ``storage.search``, the search and its SQL;
* :mod:`.caps`: ``storage.caps``, verified entity capabilities (XEP-0115);
* :mod:`.roster`: ``storage.roster``, rosters and subscription requests;
* :mod:`.history`: ``storage.history``, the messages sent and received;
* :mod:`.connector`: :class:`Storage`, holding the runner and the components.

See ``doc/developer/storage.rst``.
"""

from libervia.backend.memory.storage.connector import Storage
from libervia.backend.memory.storage.history import (
    DIRECTIONS,
    AddResult,
    HistoryFilter,
    HistoryMessage,
    HistoryPage,
)
from libervia.backend.memory.storage.item_reads import ItemData, ItemsPage, OrderBy
from libervia.backend.memory.storage.pubsub import DEFAULT_BATCH_SIZE, NODE_FIELDS
from libervia.backend.memory.storage.roster import (
    SUBSCRIPTIONS,
    PendingRequest,
    RosterEntry,
    StoredRoster,
)
from libervia.backend.memory.storage.runner import (
    CallStats,
    StorageComponent,
    StorageError,
    StorageRunner,
    StorageUnavailable,
)
from libervia.backend.memory.storage.search import SearchHit, SearchResult
from libervia.backend.memory.storage.search_query import (
    Condition,
    InvalidQuery,
    Order,
    SearchQuery,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DIRECTIONS",
    "AddResult",
    "HistoryFilter",
    "HistoryMessage",
    "HistoryPage",
    "NODE_FIELDS",
    "CallStats",
    "Condition",
    "InvalidQuery",
    "ItemData",
    "ItemsPage",
    "Order",
    "OrderBy",
    "PendingRequest",
    "RosterEntry",
    "SUBSCRIPTIONS",
    "SearchHit",
    "SearchQuery",
    "SearchResult",
    "Storage",
    "StorageComponent",
    "StorageError",
    "StorageRunner",
    "StorageUnavailable",
    "StoredRoster",
]
