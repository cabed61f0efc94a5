"""The benchmark suite still runs: ``python -m bench --quick`` writes a complete table.

This is no timed test: whatever the figures, it only checks that every benchmark ran
(no error row) and produced a figure, and that both outputs were written. Slow machines
never fail it; the targets are reported by the benchmarks themselves.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.suite import BENCHMARKS
from tests.servers.ejabberd import ejabberd_available
from tests.support import unavailable

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.integration


def test_quick_benchmark_run_writes_every_figure(tmp_path):
    missing = [name for name in ("prosody", "prosodyctl") if shutil.which(name) is None]
    if missing or not ejabberd_available():
        unavailable("the benchmarks need Prosody and ejabberd (Debian packages)")
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout + run.stderr
    table = (tmp_path / "results.md").read_text()
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["mode"] == "quick"
    ran = {result["id"] for result in document["results"]}
    assert ran == {bench_id for bench_id, __, __ in BENCHMARKS}
    for result in document["results"]:
        assert result["error"] is None, result
        assert math.isfinite(result["measured"]["median"]), result
        assert f"| {result['id']} |" in table
    assert document["machine"]["cores"] >= 1
