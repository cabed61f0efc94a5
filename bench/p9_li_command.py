"""P9: ``li pubsub get -M 20`` on a synced node, the whole command, as a user runs it.

A node is created, filled and synchronised through an in-process backend (see
:mod:`bench.backend`), which is then stopped; a real backend process (the
``libervia-backend`` launcher with a temporary configuration file, see
:mod:`bench.backend_process`) is started on the same data, and its profile connected,
so that its cache serves the node.  The figure is the wall time of the installed
``li`` script, run as a subprocess (interpreter start, imports, bridge call, answer
printed), alternated with ``python -c pass`` run by the same interpreter: the floor
of any Python command.
"""

from __future__ import annotations

import json
import subprocess
import time

from twisted.internet import threads

from bench.backend import server_for, synced_node
from bench.backend_process import ProcessSetup, python_command, stop
from bench.harness import Bench, Result, measure_pair, ratio_result
from tests.support import venv_script

LATEST = 20
LIMIT = 0.150
TIMEOUT = 120


async def run(bench: Bench) -> list[Result]:
    count = bench.size(full=1_000, quick=50)
    synced = await synced_node(bench, server_for(bench, "ejabberd", count), count,
                               label="p9")
    await synced.factory.close()
    # the same data folder (the profile's password is encrypted with a key kept there)
    setup = ProcessSetup(synced.folder, database=synced.folder / "libervia.db")
    process = await threads.deferToThread(setup.start_ready)
    bench.on_close(lambda: threads.deferToThread(stop, process))
    # li finds the backend's socket through the same configuration file
    env = {**setup.env(), "LIBERVIA_CONFIG": str(setup.config)}
    # as on a user's machine, compiled modules are cached (the first runs, untimed,
    # write them): compiling li's modules at every run costs tens of milliseconds
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    li = venv_script("li")
    profile = synced.reader.name
    get = [li, "pubsub", "get", "-p", profile, "-s", synced.info.pubsub_service,
           "-n", synced.node, "-M", str(LATEST)]
    await threads.deferToThread(ready, [li, "profile", "connect", profile], get, env)

    def command() -> None:
        subprocess.run(get, env=env, check=True, stdout=subprocess.DEVNULL, timeout=60)

    def python_pass() -> None:
        subprocess.run(python_command("pass"), env=env, check=True, timeout=60)

    # blocking calls: nothing else runs meanwhile, the clock sees the whole command
    measured, baseline = await measure_pair(command, python_pass, bench.repeat)
    result = ratio_result(
        "P9", f"li pubsub get -M {LATEST}, whole command", synced.setting, measured,
        "python -c pass", baseline, f"< {LIMIT * 1000:.0f} ms", lambda ratio: True,
        details={"items": count, "server": synced.info.kind})
    result.met = result.measured.median < LIMIT
    result.notes = (f"{(result.measured.median - result.baseline.median) * 1000:.0f} ms "
                    "more than the bare interpreter")
    return [result]


def ready(connect: list[str], get: list[str], env: dict[str, str]) -> None:
    """Connect the profile, then wait until the cache answers (the node verified)."""
    subprocess.run(connect, env=env, check=True, capture_output=True, timeout=TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while True:
        answer = subprocess.run([*get, "--output", "json"], env=env, capture_output=True,
                                text=True, timeout=TIMEOUT)
        if answer.returncode == 0:
            data = json.loads(answer.stdout)
            if data["metadata"].get("cached") and len(data["items"]) == LATEST:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the backend's cache does not serve the node: "
                               f"{answer.stdout}{answer.stderr}")
        time.sleep(0.2)

