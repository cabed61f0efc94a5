"""P7: cold start of a backend process to ready vs ``python -c "import twisted"``.

Each start is a first start: a new folder with a new configuration and no database, so
the time covers the interpreter, the imports, the creation of the schema (migrations),
the loading of the plugins and the bridge listening: until the launcher logs that the
backend is ready (which it does once the bridge listens; the bridge is then asked for
the backend's status, outside of the timing, to check it answers). The baseline is
the same interpreter (the venv's) starting and importing Twisted, the floor of any
Twisted program. Both are alternated. Target: under 500 ms.

The backend's modules are compiled once (the unmeasured first start writes what is
missing), as an installed backend has them: the test environment forbids writing
compiled modules, and compiling them again at every start is no start's work.
"""

from __future__ import annotations

import subprocess
import time

from twisted.internet import threads

from bench.backend_process import ProcessSetup, kill, python_command, stop
from bench.harness import Bench, Result, ratio_result

#: seconds from the command to ready, at most
LIMIT = 0.5


def _timed_start(setup: ProcessSetup) -> float:
    started = time.perf_counter()
    process = setup.start_ready()
    elapsed = time.perf_counter() - started
    try:
        with setup.bridge() as bridge:
            status = bridge.call("backend_status")
        if not status.get("ready"):
            raise RuntimeError(f"the backend said it was ready, its bridge says {status}")
    except BaseException:
        kill(process)
        raise
    stop(process)
    return elapsed


def _timed_import() -> float:
    started = time.perf_counter()
    subprocess.run(python_command("import twisted"), check=True, timeout=60)
    return time.perf_counter() - started


def _setup(bench: Bench) -> ProcessSetup:
    # modules compiled once, as an installed backend has them (the warm-up start
    # writes what is missing): compiling them at each start is not a start's work
    return ProcessSetup(bench.tempdir("p7"), bytecode=True)


def _alternate(bench: Bench, repeat: int) -> tuple[list[float], list[float]]:
    # one warm-up of each (file system caches, compiled modules), then alternately
    _timed_start(_setup(bench))
    _timed_import()
    starts, imports = [], []
    for __ in range(repeat):
        starts.append(_timed_start(_setup(bench)))
        imports.append(_timed_import())
    return starts, imports


async def run(bench: Bench) -> list[Result]:
    repeat = bench.size(full=11, quick=3)
    starts, imports = await threads.deferToThread(_alternate, bench, repeat)
    result = ratio_result(
        "P7", "cold start to ready (launcher, new database)", "SQLite, fresh folder",
        starts, 'python -c "import twisted"', imports, f"< {LIMIT * 1000:.0f} ms",
        lambda r: True, notes="ready: the launcher's ready line, the bridge answering")
    result.met = result.measured.median < LIMIT
    return [result]
