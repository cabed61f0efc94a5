"""The benchmarks, in the order they run: (id, module of this package, one-line what)."""

BENCHMARKS: list[tuple[str, str, str]] = [
    ("P1", "p1_cached_get", "latest 20 items of a synced node: cache vs server"),
    ("P2", "p2_storage_get", "storage get-items vs raw sqlite3 SELECT"),
    ("P3", "p3_full_sync", "full sync of a node vs a bare client paging it"),
    ("P4", "p4_search", "JSON-path + full-text search vs hand-written SQL"),
    ("P5", "p5_event_ingestion", "item notifications ingested per second"),
    ("P6", "p6_scram_cpu", "SCRAM-SHA-256 login CPU vs hashlib.pbkdf2_hmac"),
    ("P7", "p7_cold_start", "cold start to ready vs importing Twisted"),
    ("P8", "p8_memory", "peak memory with 100,000 cached items vs empty"),
    ("P9", "p9_li_command", "li pubsub get -M 20, whole command vs python -c pass"),
]
