"""P3: full synchronisation of a node by the cache vs a bare client paging it by RSM.

The cache's side is the plugin's own entry point, ``PubsubCache.synchronise(client,
service, node, force=True)`` on the node it has synchronised already: every item is
fetched again by RSM pages of the configured ``page_size``, parsed by the analyser and
stored, replacing the cached ones; the time runs until the node is ``completed``.

The baseline asks for the same pages of the same node from the same connection, with
the same page size, through the public API with ``use_cache=False``
(``XEP-0060.get_items`` with an RSM request after the previous page's last item),
keeping the items in memory: what any client must do at least to read the whole node.
A service ignoring RSM (Prosody) answers the whole node to the first request, for both.
"""

from __future__ import annotations

from bench.backend import PAGE_SIZE, on_each_server, shared_synced_node
from bench.harness import Bench, Result, measure_pair, ratio_result
from libervia.backend.plugins.plugin_xep_0059 import RSMRequest

MAX_RATIO = 1.25


async def run(bench: Bench) -> list[Result]:
    return await on_each_server(bench, "P3", "full sync",
                                lambda kind, count: measure_node(bench, kind, count))


async def page_all(reader, page_size: int) -> list:
    """Every item of the reader's node, by RSM pages asked to the service."""
    items: list = []
    request = RSMRequest(max=page_size)
    while True:
        result = await reader.get(rsm_request=request, use_cache=False)
        items.extend(result.items)
        last = result.rsm.get("last")
        count = result.rsm.get("count")
        if not result.items or last is None or (count is not None and len(items) >= count):
            return items
        request = RSMRequest(max=page_size, after=last)


async def measure_node(bench: Bench, kind: str, count: int) -> Result:
    synced = await shared_synced_node(bench, kind, count)
    reader = synced.reader
    cache = reader.cache

    async def cache_sync() -> None:
        state = await cache.synchronise(reader.client, reader.service, synced.node,
                                        force=True)
        if state["state"] != "completed":
            raise AssertionError(f"synchronisation ended {state}")

    async def bare_client() -> None:
        items = await page_all(reader, PAGE_SIZE)
        if len(items) != count:
            raise AssertionError(f"the bare client got {len(items)} items of {count}")

    repeat = bench.size(full=7, quick=3)
    measured, baseline = await measure_pair(cache_sync, bare_client, repeat)
    if len(await reader.cached()) != count:
        raise AssertionError("the cache does not hold the whole node after its sync")
    return ratio_result(
        "P3", "full sync by the cache", f"{synced.setting}, pages of {PAGE_SIZE}",
        measured, f"bare client paging by RSM ({PAGE_SIZE}/page)", baseline,
        f"<= {MAX_RATIO}x", lambda ratio: ratio <= MAX_RATIO,
        details={"items": count, "server": kind, "page_size": PAGE_SIZE,
                 "fill_seconds": synced.fill_seconds,
                 "first_sync_seconds": synced.sync_seconds})
