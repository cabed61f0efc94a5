"""Benchmarks of the backend, each measured side by side with what it replaces.

Run them with ``tools/run-bench`` (or ``make bench``); ``--quick`` runs every benchmark
with small sizes, only to prove that the suite still works. See :mod:`bench.harness`
for how a benchmark is written and :mod:`bench.suite` for the list.
"""
