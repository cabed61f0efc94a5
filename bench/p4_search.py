"""P4: cache search (conditions on parsed data + full text) vs hand-written SQL.

100,000 cached blog items (quick: 2,000), spread over 100 nodes (quick: 10), are
stored through the storage's own code with what the blog analyser parsed from them
(:mod:`bench.cache_data`). Each query below is run both ways, alternately:

- ``storage.search.search_items``: validation of the query, SQL built by
  :mod:`libervia.backend.memory.storage.search`, the page and the count of ``total``, in a
  storage thread, rows turned into ``SearchHit`` objects;
- the SQL someone would write by hand for the same answer, with the standard
  ``sqlite3`` module on the same file, in a thread as well: the same joins, FTS5 match
  and ``bm25`` rank, ``json_extract``/``json_each`` for the conditions, the same
  order, page and count.

Before timing, both are checked to give the same items in the same order, and the same
total. The queries mix rare words (a few hundred matches in the full size) and common
ones (most items match: ranking and counting them all is the cost).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.cache_data import RawSqlite, fill_cache, open_storage, published
from bench.harness import Bench, Result, measure_pair, ratio_result

LIMIT = 20

FROM = """
FROM pubsub_items_fts
JOIN pubsub_items AS i ON i.id = pubsub_items_fts.rowid
JOIN pubsub_nodes AS n ON n.id = i.node_id
JOIN profiles AS p ON p.id = n.profile_id
WHERE pubsub_items_fts MATCH :fts AND p.name = :profile AND n.type = 'blog'
"""
COLUMNS = ("SELECT p.name, n.service, n.name, i.name, i.created, i.updated, i.parsed, "
           "-bm25(pubsub_items_fts) AS rank")


@dataclass
class Query:
    """One search, as a frontend asks it and as SQL written by hand."""

    label: str
    query: dict[str, Any]
    #: the WHERE conditions on parsed data (ANDed to those of FROM)
    where: str
    order: str
    params: dict[str, Any]

    def page_sql(self) -> str:
        return f"{COLUMNS} {FROM} AND {self.where} ORDER BY {self.order} LIMIT {LIMIT}"

    def count_sql(self) -> str:
        return f"SELECT count(*) {FROM} AND {self.where}"


def queries(total: int) -> list[Query]:
    """The searches: each combines full text with conditions on parsed data."""
    middle = published(total // 2).isoformat()
    quarter = published(total // 4).isoformat()
    three_quarters = published(total * 3 // 4).isoformat()
    return [
        Query("rare word, author ==",
              {"fts": "quasar", "conditions": [["author.name", "==", "Louise"]]},
              "json_extract(i.parsed, '$.author.name') = :author",
              "rank DESC, i.id DESC", {"fts": '"quasar"', "author": "Louise"}),
        Query("common word, categories overlap",
              {"fts": "garden",
               "conditions": [["categories", "overlap", ["xmpp", "music"]]]},
              "EXISTS (SELECT 1 FROM json_each(i.parsed, '$.categories') "
              "WHERE value IN ('xmpp', 'music'))",
              "rank DESC, i.id DESC", {"fts": '"garden"'}),
        Query("two words, published >=, newest first",
              {"fts": "river coffee", "conditions": [["published", ">=", middle]],
               "order": [["path", "published", "desc"]]},
              "json_extract(i.parsed, '$.published') >= :since",
              "json_extract(i.parsed, '$.published') DESC, i.id DESC",
              {"fts": '"river" "coffee"', "since": middle}),
        Query("rare word, title ilike",
              {"fts": "zeppelin", "conditions": [["title", "ilike", "%r%"]]},
              "json_extract(i.parsed, '$.title') LIKE '%r%'",
              "rank DESC, i.id DESC", {"fts": '"zeppelin"'}),
        Query("common word, author in, published between, latest first",
              {"fts": "concert",
               "conditions": [["author.name", "in", ["Nadia", "Yuki"]],
                              ["published", "between", [quarter, three_quarters]]],
               "order": [["created", "desc"]]},
              "json_extract(i.parsed, '$.author.name') IN ('Nadia', 'Yuki') AND "
              "json_extract(i.parsed, '$.published') BETWEEN :low AND :high",
              "i.created DESC, i.id DESC",
              {"fts": '"concert"', "low": quarter, "high": three_quarters}),
    ]


async def run(bench: Bench) -> list[Result]:
    total = bench.size(full=100_000, quick=2_000)
    nodes = bench.size(full=100, quick=10)
    path = bench.tempdir("p4") / "libervia.db"
    storage = await open_storage(path)
    bench.on_close(storage.stop)
    cached = await fill_cache(storage, total, nodes)
    raw = RawSqlite(path)
    bench.on_close(raw.close)
    setting = f"SQLite, {cached.items:,} items in {nodes} nodes"
    results = []
    for query in queries(total):
        search = {**query.query, "profiles": [cached.profile], "types": ["blog"],
                  "limit": LIMIT}
        params = {**query.params, "profile": cached.profile}

        async def hand_written(query: Query = query, params: dict = params
                               ) -> tuple[list[tuple], int]:
            rows = await raw.fetch_in_thread(query.page_sql(), params)
            (count,), = await raw.fetch_in_thread(query.count_sql(), params)
            return rows, count

        found = await storage.search.search_items(search)
        rows, count = await hand_written()
        if [h.item_id for h in found.items] != [r[3] for r in rows] or (
                found.total != count):
            raise AssertionError(
                f"{query.label}: the hand-written SQL answers differently "
                f"({count} items, not {found.total})")
        measured, baseline = await measure_pair(
            lambda search=search: storage.search.search_items(search), hand_written,
            bench.repeat, clock=time.process_time)
        results.append(ratio_result(
            "P4", f"search: {query.label}", f"{setting}, {found.total:,} match",
            measured, "hand-written SQL (sqlite3)", baseline, "<= 1.5x, p95 reported",
            lambda r: r <= 1.5, details={"query": search, "matches": found.total}))
    return results
