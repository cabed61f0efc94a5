"""P2: the storage's get-items for the latest 20 items vs a raw ``sqlite3`` SELECT.

A node of 10,000 cached items (quick: 1,000) is stored through the storage's own code
(:mod:`bench.cache_data`). The measured call is the one the pubsub cache makes to
answer "the last 20 items" (``storage.pubsub.get_items(max_items=20, before="")``):
the page (id and XML of each item) and its RSM data (position, count), in a storage
thread, back to the reactor. The baseline is the same rows read with the standard
``sqlite3`` module on the same file (same columns, order and limit, a connection kept
open), run in a thread of its own too: the storage must never block the reactor, so
crossing to a thread and back is part of any storage call, raw or not. The raw query
run in line, without crossing, is in the notes. Timings are CPU time of the process
(all threads): see ``bench/README.md``.
"""
from __future__ import annotations

import time
from dataclasses import asdict

from bench.cache_data import RawSqlite, fill_cache, open_storage
from bench.harness import Bench, Result, Stats, measure, measure_pair, ratio_result

LATEST = 20
#: the storage call's time, at most, in raw SELECTs in a thread
LIMIT = 1.5

RAW_LATEST = (
    "SELECT name, data FROM pubsub_items "
    "WHERE node_id = ? ORDER BY created DESC, id DESC LIMIT ?"
)


async def run(bench: Bench) -> list[Result]:
    size = bench.size(full=10_000, quick=1_000)
    path = bench.tempdir("p2") / "libervia.db"
    storage = await open_storage(path)
    bench.on_close(storage.stop)
    cached = await fill_cache(storage, size, nodes=1)
    node_id = next(iter(cached.nodes.values()))
    raw = RawSqlite(path)
    bench.on_close(raw.close)

    def raw_latest() -> list[tuple]:
        # the rows come newest first: reversed, as get_items does
        return raw.fetch(RAW_LATEST, (node_id, LATEST))[::-1]

    async def raw_latest_in_thread() -> list[tuple]:
        return (await raw.fetch_in_thread(RAW_LATEST, (node_id, LATEST)))[::-1]

    async def storage_latest() -> None:
        items, page = await storage.pubsub.get_items(node_id, max_items=LATEST, before="")
        assert len(items) == LATEST and page.count == size

    # both return the same items, in the same order
    items, __ = await storage.pubsub.get_items(node_id, max_items=LATEST, before="")
    rows = await raw_latest_in_thread()
    assert [(i.name, i.data) for i in items] == rows, "not the same rows"

    calls = bench.size(full=200, quick=50)
    repeat = bench.repeat

    async def batch(fn):
        for __ in range(calls):
            await fn()

    measured, baseline = await measure_pair(
        lambda: batch(storage_latest),
        lambda: batch(raw_latest_in_thread), repeat, clock=time.process_time)
    inline = measure(lambda: [raw_latest() for __ in range(calls)], repeat,
                     clock=time.process_time)
    per_call = [s / calls for s in measured]
    base_per_call = [s / calls for s in baseline]
    inline_stats = Stats.of([s / calls for s in inline])
    result = ratio_result(
        "P2", f"Storage.get_items, latest {LATEST}", f"SQLite, {size:,} items",
        per_call, "raw sqlite3 SELECT in a thread", base_per_call, f"<= {LIMIT}x",
        lambda r: r <= LIMIT,
        notes=f"raw SELECT in line: {inline_stats.text()}",
        details={"calls_per_sample": calls, "raw_inline": asdict(inline_stats),
                 "ratio_to_inline": Stats.of(per_call).ratio_to(inline_stats)})
    return [result]
