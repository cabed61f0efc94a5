"""P8: peak memory of a backend process holding 100,000 cached items vs empty.

Two SQLite databases are prepared by the storage's own code (:mod:`bench.cache_data`):
one with 100,000 cached blog items (quick: 2,000) in 100 nodes (quick: 10), one with
the same profile and no item. For each, a backend process (the launcher, as users run
it) is started on the file and serves, through its bridge socket:

- the cache statistics;
- the latest 500 items of every node, with their XML (``cache_search`` by node);
- the searches of P4 (full text and parsed data), 500 results each with their XML;

then it is restarted on the same file (the cache is there from the start) and serves
the same calls again. The figure is the peak resident memory of the backend process
(``VmHWM`` in ``/proc/<pid>/status``, over both runs) with the cache, minus the same
peak with the empty database; the two alternate when repeated.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from twisted.internet import threads

from bench.backend_process import ProcessSetup, kill, read_vm_hwm, stop
from bench.cache_data import CachedNodes, fill_cache, open_storage
from bench.harness import Bench, Result, Stats
from bench.p4_search import queries

#: items per answer (the largest page a search gives)
PAGE = 500
MB = 1_000_000
#: the target: extra peak memory with the cache
TARGET_MB = 150


async def _database(path: Path, total: int, nodes: int) -> CachedNodes:
    storage = await open_storage(path)
    try:
        return await fill_cache(storage, total, nodes)
    finally:
        await storage.stop()


def _serve(setup: ProcessSetup, cached: CachedNodes, total: int) -> int:
    """Calls a frontend makes on the cache; return how many items were answered."""
    answered = 0
    with setup.bridge() as bridge:
        stats = bridge.call("cache_stats", profile=cached.profile)
        if stats["items"] != cached.items:
            raise AssertionError(f"the backend sees {stats['items']} cached items, "
                                 f"not {cached.items}")
        searches: list[dict[str, Any]] = [
            {"nodes": [node], "order": [["created", "desc"]]} for node in cached.nodes]
        searches += [query.query for query in queries(total)]
        for search in searches:
            result = bridge.call("cache_search", profile=cached.profile, query={
                **search, "limit": PAGE, "payload": True})
            answered += len(result["items"])
    return answered


def _peak(setup: ProcessSetup, cached: CachedNodes, total: int) -> tuple[int, int]:
    """Run the backend twice on its database; its highest peak memory, items answered."""
    peak = answered = 0
    for __ in range(2):  # a first start, then a restart on the same data
        process = setup.start_ready()
        try:
            answered += _serve(setup, cached, total)
            peak = max(peak, read_vm_hwm(process.process.pid))
        except BaseException:
            kill(process)
            raise
        stop(process)
    return peak, answered


def _measure(bench: Bench, loaded: tuple[Path, CachedNodes], empty: tuple[Path, CachedNodes],
             total: int, repeat: int) -> dict[str, list[int]]:
    peaks: dict[str, list[int]] = {"loaded": [], "empty": [], "answered": []}
    for __ in range(repeat):
        for name, (database, cached) in (("loaded", loaded), ("empty", empty)):
            setup = ProcessSetup(bench.tempdir(f"p8-{name}"), database=database)
            peak, answered = _peak(setup, cached, total)
            peaks[name].append(peak)
            if name == "loaded":
                peaks["answered"].append(answered)
    return peaks


async def run(bench: Bench) -> list[Result]:
    total = bench.size(full=100_000, quick=2_000)
    nodes = bench.size(full=100, quick=10)
    folder = bench.tempdir("p8-data")
    loaded = folder / "loaded.db", await _database(folder / "loaded.db", total, nodes)
    empty = folder / "empty.db", await _database(folder / "empty.db", 0, 1)
    repeat = bench.size(full=3, quick=1)
    peaks = await threads.deferToThread(_measure, bench, loaded, empty, total, repeat)
    extra = [(a - b) / MB for a, b in zip(peaks["loaded"], peaks["empty"], strict=True)]
    with_cache = Stats.of([p / MB for p in peaks["loaded"]], "MB")
    without = Stats.of([p / MB for p in peaks["empty"]], "MB")
    measured = Stats.of(extra, "MB")
    return [Result(
        id="P8", what="peak memory (VmHWM) of a backend serving its cache, extra",
        setting=f"SQLite, {loaded[1].items:,} items in {nodes} nodes",
        measured=measured, target=f"<= +{TARGET_MB} MB",
        met=measured.median <= TARGET_MB, ratio=measured.median,
        notes=(f"peak with the cache {with_cache.text()}, with an empty database "
               f"{without.text()}; {statistics.median(peaks['answered']):,.0f} items "
               "answered with their XML over two runs"),
        details={"with_cache": asdict(with_cache), "empty": asdict(without),
                 "answered": peaks["answered"]})]
