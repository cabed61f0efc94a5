"""P3: full synchronisation of a node by the cache vs a bare client paging it by RSM.

The cache's side is the plugin's own entry point, ``PubsubCache.synchronise(client,
service, node)``, on a node the cache has just forgotten (its record and items deleted
from the database, untimed): the node is analysed, subscribed to, every item fetched
by RSM pages of the configured ``page_size``, parsed by the analyser and stored; the
time runs from the call until the node is ``completed``, as for a node first seen.

The baseline asks for the same pages of the same node from the same connection, with
the same page size, through the public API with ``use_cache=False``
(``XEP-0060.get_items`` with an RSM request after the previous page's last item),
keeping the items in memory: what any client must do at least to read the whole node.
A service ignoring RSM (Prosody) answers the whole node to the first request, for both.
"""

from __future__ import annotations

from bench.backend import PAGE_SIZE, on_each_server, shared_synced_node, wait_served
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

    async def reset() -> None:
        await reader.backend.storage.pubsub.delete_pubsub_nodes(
            profiles=[reader.name], services=[reader.service.full()], names=[synced.node])

    async def cache_sync() -> None:
        state = await cache.synchronise(reader.client, reader.service, synced.node)
        if state["state"] != "completed":
            raise AssertionError(f"synchronisation ended {state}")

    async def bare_client() -> None:
        items = await page_all(reader, PAGE_SIZE)
        if len(items) != count:
            raise AssertionError(f"the bare client got {len(items)} items of {count}")

    repeat = bench.size(full=7, quick=3)
    measured, baseline = await measure_pair(cache_sync, bare_client, repeat,
                                            prepare=reset)
    if len(await reader.cached()) != count:
        raise AssertionError("the cache does not hold the whole node after its sync")
    # the node is left served, as the other benchmarks sharing it expect
    await wait_served(reader, count)
    return ratio_result(
        "P3", "full sync of a node first seen", f"{synced.setting}, pages of {PAGE_SIZE}",
        measured, f"bare client paging by RSM ({PAGE_SIZE}/page)", baseline,
        f"<= {MAX_RATIO}x", lambda ratio: ratio <= MAX_RATIO,
        details={"items": count, "server": kind, "page_size": PAGE_SIZE,
                 "fill_seconds": synced.fill_seconds,
                 "first_sync_seconds": synced.sync_seconds})
