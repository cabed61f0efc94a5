"""``python -m bench [--quick] [--only P1,P3] [--output DIR]``: run the benchmarks.

Prints the Markdown table and writes ``results.md`` and ``results.json`` into the
output folder (``bench/results`` by default). The exit status is 1 when a benchmark
could not run; a missed target is reported in the table, never an error: this is a
benchmark, not a timed test.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from twisted.internet import defer, task

from bench import report
from bench.harness import Bench, Result
from bench.suite import BENCHMARKS

DEFAULT_OUTPUT = Path(__file__).parent / "results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, few repetitions: only proves the suite runs")
    parser.add_argument("--only", default="",
                        help="comma-separated ids to run (default: all), e.g. P1,P3")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="folder for results.md and results.json (default: %(default)s)")
    args = parser.parse_args(argv)
    known = {bench_id for bench_id, __, __ in BENCHMARKS}
    args.only = {i.strip().upper() for i in args.only.split(",") if i.strip()}
    if args.only - known:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(args.only - known))}")
    return args


async def run_suite(args: argparse.Namespace) -> list[Result]:
    bench = Bench(quick=args.quick)
    results: list[Result] = []
    try:
        for bench_id, module_name, what in BENCHMARKS:
            if args.only and bench_id not in args.only:
                continue
            print(f"[bench] {bench_id}: {what}...", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                module = importlib.import_module(f"bench.{module_name}")
                results.extend(await defer.ensureDeferred(module.run(bench)))
            except Exception as e:  # noqa: BLE001 - reported, and the next one runs
                traceback.print_exc()
                results.append(Result.failed(bench_id, what, f"{type(e).__name__}: {e}"))
            print(f"[bench] {bench_id} done in {time.monotonic() - started:.1f} s",
                  file=sys.stderr, flush=True)
    finally:
        await bench.close()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    outcome: dict[str, list[Result]] = {}

    async def body(reactor):
        outcome["results"] = await run_suite(args)

    try:
        task.react(lambda reactor: defer.ensureDeferred(body(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            return int(e.code) if isinstance(e.code, int) else 1
    results = outcome.get("results", [])
    md, js = report.write(results, args.output, args.quick)
    print(md.read_text())
    print(f"written: {md} and {js}", file=sys.stderr)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
