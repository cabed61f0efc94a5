"""P1: the latest 20 items of a synced node, from the cache, as a frontend asks for them.

The node is synchronised by a backend on SQLite, and by another one on PostgreSQL (a
private server on the same machine): one set of rows for each.

The measured call is what the bridge runs for a frontend's ``pubsub_get`` request: the
method called by name with its parameters (checked against its type hints), the
XEP-0060 get path and the cache's answer, and the answer encoded as the frame the
bridge writes.  It is measured alternately with two baselines, on the same node and
connection:

- the storage call the cache makes for it, ``storage.pubsub.get_items(node_id,
  max_items=20, before="")`` (P2's call): the floor of any answer from the database;
  target: the whole answer in at most 5 times that call;
- the same request answered by the service, ``XEP-0060.get_items(client, service,
  node, max_items=20, use_cache=False)`` (a round trip and the parsing of its answer);
  target: the cache at least 20 times faster.

Samples are batches of calls (``BATCH``), timed with the wall clock: a thread crossing
is part of both the answer and the storage call.  Each cached answer is checked (20
items, flagged as cached).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench.backend import (
    SyncedNode,
    on_each_server,
    shared_synced_node,
    shared_synced_node_on_postgresql,
)
from bench.harness import Bench, Result, measure_alternating, ratio_result
from libervia.backend.bridge.protocol import encode

LATEST = 20
SPEEDUP = 20
#: the answer's time, at most, in storage calls
STORAGE_CALLS = 5
#: calls per sample of the cache and of the storage (one request to the server)
BATCH = 10


async def run(bench: Bench) -> list[Result]:
    results = []
    for engine, synced_node in (("SQLite", shared_synced_node),
                                ("PostgreSQL", shared_synced_node_on_postgresql)):
        results += await on_each_server(
            bench, "P1", f"latest {LATEST} items ({engine})",
            lambda kind, count, synced_node=synced_node: measure_node(
                bench, synced_node, kind, count))
    return results


async def measure_node(bench: Bench, synced_node: Callable[..., Awaitable[SyncedNode]],
                       kind: str, count: int) -> list[Result]:
    synced = await synced_node(bench, kind, count)
    reader = synced.reader
    backend = reader.backend
    pubsub_node = await reader.pubsub_node()
    params = {"profile": reader.name, "service": reader.service.full(),
              "node": reader.node, "max_items": LATEST}
    expected = min(LATEST, count)

    async def answer() -> None:
        for __ in range(BATCH):
            result = await backend.bridge.call("pubsub_get", params)
            encode({"jsonrpc": "2.0", "result": result, "id": 1})
            if not result["metadata"]["cached"] or len(result["items"]) != expected:
                raise AssertionError(f"the cache did not answer {LATEST} items")

    async def storage_call() -> None:
        for __ in range(BATCH):
            await backend.storage.pubsub.get_items(pubsub_node.id, max_items=LATEST,
                                                   before="")

    def remote() -> object:
        return reader.get(max_items=LATEST, use_cache=False)

    cached, storage, server = await measure_alternating(
        [answer, storage_call, remote], bench.repeat, warmup=2)
    cached = [s / BATCH for s in cached]
    storage = [s / BATCH for s in storage]
    details = {"items": count, "server": kind, "engine": synced.engine,
               "fill_seconds": synced.fill_seconds, "sync_seconds": synced.sync_seconds,
               "batch": BATCH}
    to_storage = ratio_result(
        "P1", f"latest {LATEST} items, cached, through the bridge", synced.setting,
        cached, "storage.pubsub.get_items, same node", storage,
        f"<= {STORAGE_CALLS}x", lambda ratio: ratio <= STORAGE_CALLS, details=details)
    to_server = ratio_result(
        "P1", f"latest {LATEST} items, cached, through the bridge", synced.setting,
        cached, "same request to the server (use_cache=False)", server,
        f"cache >= {SPEEDUP}x faster", lambda ratio: ratio * SPEEDUP <= 1,
        details=details)
    if to_server.ratio:
        to_server.notes = f"cache {1 / to_server.ratio:.0f}x faster"
    return [to_storage, to_server]
