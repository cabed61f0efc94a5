"""P1: the latest 20 items of a synced node, from the cache vs from the server.

Both sides are the same public call, ``XEP-0060.get_items(client, service, node,
max_items=20)``, by the same connected profile: once answered by the cache, once with
``use_cache=False`` (a round trip to the service, parsing included), alternated.
"""

from __future__ import annotations

from bench.backend import on_each_server, shared_synced_node
from bench.harness import Bench, Result, measure_pair, ratio_result

LATEST = 20
SPEEDUP = 20


async def run(bench: Bench) -> list[Result]:
    return await on_each_server(bench, "P1", f"latest {LATEST} items",
                                lambda kind, count: measure_node(bench, kind, count))


async def measure_node(bench: Bench, kind: str, count: int) -> Result:
    synced = await shared_synced_node(bench, kind, count)
    reader = synced.reader

    async def cached() -> None:
        result = await reader.get(max_items=LATEST)
        if not result.cached or len(result.items) != min(LATEST, count):
            raise AssertionError(f"the cache did not answer {LATEST} items")

    def remote() -> object:
        return reader.get(max_items=LATEST, use_cache=False)

    measured, baseline = await measure_pair(cached, remote, bench.repeat, warmup=2)
    result = ratio_result(
        "P1", f"latest {LATEST} items, cached", synced.setting, measured,
        "same call, use_cache=False", baseline, f"cache >= {SPEEDUP}x faster",
        lambda ratio: ratio * SPEEDUP <= 1,
        details={"items": count, "server": kind, "fill_seconds": synced.fill_seconds,
                 "sync_seconds": synced.sync_seconds})
    if result.ratio:
        result.notes = f"cache {1 / result.ratio:.0f}x faster"
    return result
