"""Cached blog items written straight into a storage, as the pubsub cache writes them.

The storage benchmarks (P2, P4) and the memory one (P8) need a large cache without
spending minutes publishing to a server: the items are generated here, then go through
the code the cache runs on a synchronisation: serialised as XML, parsed by the blog
analyser's parser (XEP-0277), stored with ``storage.pubsub.set_pubsub_node`` and
``storage.pubsub.replace_pubsub_items`` (node COMPLETED, with service traits). What ends up
in the database is what a synchronised blog leaves there.

Generation is deterministic (seeded), so that two runs search the same data.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.python.threadpool import ThreadPool
from twisted.words.xish import domish

from libervia.backend.memory.sqla_mapping import SyncState
from libervia.backend.memory.storage import Storage
from libervia.backend.plugins.plugin_xep_0277 import NS_ATOM, NS_MICROBLOG, parse_entry
from libervia.backend.plugins.pubsub_cache import DEFAULT_TRAITS
from libervia.backend.plugins.xep_0060.stanzas import NS_PUBSUB

PROFILE = "bench"
SERVICE = "blogger@bench.example"

#: words of titles and contents; a few are rare, to give selective full-text queries
COMMON_WORDS = (
    "release party garden music river coffee winter summer train city mountain "
    "library bridge market window letter friend story evening morning travel photo "
    "recipe bread cheese bicycle concert theatre museum harbour forest"
).split()
RARE_WORDS = ("xylophone", "quasar", "zeppelin", "obsidian")
AUTHORS = ("Louise", "Pierre", "Nadia", "Tomás", "Yuki", "Oskar", "Amina", "Jules")
CATEGORIES = ("xmpp", "movim", "travel", "food", "music", "photos", "code", "family")

#: when the generated posts start, one every few minutes after
FIRST_POST = datetime(2020, 1, 1, tzinfo=UTC)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


async def open_storage(path: Path) -> Storage:
    """A started storage on the SQLite file ``path``, at the head revision."""
    storage = Storage(sqlite_url(path))
    await storage.start()
    await storage.migrate()
    return storage


def published(number: int) -> datetime:
    """When the post ``number`` (counted from 0 over the whole cache) was published."""
    return FIRST_POST + timedelta(minutes=7 * number)


def blog_item(rng: random.Random, number: int) -> domish.Element:
    """A pubsub ``<item/>`` holding an Atom entry, as a blog service sends it."""
    item = domish.Element((NS_PUBSUB, "item"))
    item_id = f"post{number:07}"
    item["id"] = item_id
    entry = item.addElement((NS_ATOM, "entry"))
    words = rng.choices(COMMON_WORDS, k=40)
    if rng.random() < 0.02:
        words[rng.randrange(len(words))] = rng.choice(RARE_WORDS)
    entry.addElement("title", content=" ".join(words[:4]).capitalize())
    entry.addElement("id", content=f"xmpp:{SERVICE}?;node={NS_MICROBLOG};item={item_id}")
    stamp = published(number).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry.addElement("published", content=stamp)
    entry.addElement("updated", content=stamp)
    author = entry.addElement("author")
    author.addElement("name", content=rng.choice(AUTHORS))
    author.addElement("uri", content=f"xmpp:{SERVICE}")
    for term in rng.sample(CATEGORIES, k=rng.randint(0, 3)):
        entry.addElement("category")["term"] = term
    link = entry.addElement("link")
    link["rel"] = "alternate"
    link["href"] = f"https://blog.example/{item_id}"
    content = entry.addElement("content", content=" ".join(words[4:]).capitalize() + ".")
    content["type"] = "text"
    return item


def item_rows(items: list[domish.Element], started: datetime) -> list[dict[str, Any]]:
    """Rows for the storage, stamped and parsed as a synchronisation does."""
    count = len(items)
    return [{
        "name": item["id"],
        "data": item.toXml(),
        "parsed": parse_entry(item),
        # the service's order, as time stamps just before the synchronisation
        "created": started - timedelta(microseconds=count - position),
        "updated": started - timedelta(microseconds=count - position),
    } for position, item in enumerate(items)]


@dataclass
class CachedNodes:
    """What :func:`fill_cache` stored: node names and ids, and the item count."""

    profile: str
    service: str
    nodes: dict[str, int]
    items: int


async def fill_cache(storage: Storage, total: int, nodes: int, seed: int = 8,
                     profile: str = PROFILE) -> CachedNodes:
    """Store ``total`` blog items spread evenly over ``nodes`` synchronised blog nodes.

    The profile is created if needed. Node names are the blog node and sub-nodes of it,
    as the XEP-0277 analyser would record them (analyser, type ``blog``).
    """
    if profile not in await storage.profiles.get_profiles():
        await storage.profiles.create_profile(profile)
    rng = random.Random(seed)
    traits = DEFAULT_TRAITS | {"software": "bench"}
    stored: dict[str, int] = {}
    number = 0
    for index in range(nodes):
        name = NS_MICROBLOG if index == 0 else f"{NS_MICROBLOG}:{index}"
        size = total // nodes + (1 if index < total % nodes else 0)
        node = await storage.pubsub.set_pubsub_node(
            profile, SERVICE, name, analyser="XEP-0277", type_="blog",
            sync_state=SyncState.IN_PROGRESS, extra={"traits": traits})
        items = [blog_item(rng, number + n) for n in range(size)]
        number += size
        await storage.pubsub.replace_pubsub_items(
            node.id, item_rows(items, datetime.now(UTC)), sync_state=SyncState.COMPLETED)
        stored[name] = node.id
    return CachedNodes(profile, SERVICE, stored, number)


class RawSqlite:
    """The baselines: the standard ``sqlite3`` module on the same file.

    One connection kept open, used by one thread at a time: a thread of its own
    (:meth:`fetch_in_thread`, as the storage never blocks the reactor either) or the
    caller's (:meth:`fetch`).
    """

    def __init__(self, path: Path) -> None:
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="raw-sqlite")
        self.pool.start()
        self._conn = sqlite3.connect(path, check_same_thread=False)

    def fetch(self, sql: str, args: tuple | dict = ()) -> list[tuple]:
        return self._conn.execute(sql, args).fetchall()

    def fetch_in_thread(self, sql: str, args: tuple | dict = ()) -> defer.Deferred:
        return threads.deferToThreadPool(reactor, self.pool, self.fetch, sql, args)

    def close(self) -> None:
        self.pool.stop()
        self._conn.close()
