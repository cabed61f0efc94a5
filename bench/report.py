"""The outputs of a run: a Markdown table and a JSON document."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.harness import Result, format_value


def machine() -> dict[str, Any]:
    """Where the figures come from: CPU, memory, system and the versions that matter."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "system": platform.platform(),
        "python": platform.python_version(),
    }
    for dist in ("libervia-backend", "twisted", "sqlalchemy", "wokkel"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    import sqlite3

    info["sqlite"] = sqlite3.sqlite_version
    info["prosody"] = _package_version("prosody")
    info["ejabberd"] = _package_version("ejabberd")
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return None


def _package_version(package: str) -> str | None:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _ratio(result: Result) -> str:
    if result.ratio is None:
        return ""
    if result.baseline is None:
        return format_value(result.ratio, result.measured.unit)
    return speed_ratio(result.ratio)


def speed_ratio(ratio: float) -> str:
    """A ratio of times (measured / compared with) as words: ``11.3x faster``,
    ``1.23x slower`` (``results.json`` keeps the raw ratio)."""
    if ratio <= 0:
        return "instant"
    if round(ratio, 2) == 1:
        return "same (1.00x)"
    if ratio > 1:
        return f"{ratio:.3g}x slower"
    return f"{1 / ratio:.3g}x faster"


def _met(result: Result) -> str:
    if result.error:
        return "error"
    return {True: "yes", False: "**no**", None: "reported"}[result.met]


def markdown(results: list[Result], info: dict[str, Any], quick: bool) -> str:
    """The table, with the machine it was measured on below it."""
    rows = ["| id | what | setting | measured: median (min–max) | compared with | ratio "
            "| target | met |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.error:
            rows.append(f"| {r.id} | {r.what} | | error: {r.error.splitlines()[0]} "
                        "| | | | error |")
            continue
        base = ""
        if r.baseline is not None:
            base = f"{r.baseline_what}: {r.baseline.text()}"
        measured = r.measured.text()
        if r.measured.n > 2:
            measured += f", p95 {format_value(r.measured.p95, r.measured.unit)}"
        rows.append(f"| {r.id} | {r.what} | {r.setting} | {measured} | {base} "
                    f"| {_ratio(r)} | {r.target} | {_met(r)} |")
    notes = [f"- {r.id}: {r.notes}" for r in results if r.notes]
    memory = f", {info['memory_gib']} GiB" if info.get("memory_gib") else ""
    lines = rows + [""]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    lines.append(
        f"{'Quick mode (small sizes: proves the suite runs, not the targets). ' if quick else ''}"
        f"Measured {info['date']} on {info['cpu']} ({info['cores']} cores{memory}), "
        f"{info['system']}, Python {info['python']}, SQLite {info['sqlite']}, "
        f"Prosody {info['prosody']}, ejabberd {info['ejabberd']}.")
    return "\n".join(lines) + "\n"


def write(results: list[Result], output: Path, quick: bool) -> tuple[Path, Path]:
    """Write ``results.md`` and ``results.json`` into ``output``; return both paths."""
    info = machine()
    info["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    output.mkdir(parents=True, exist_ok=True)
    md = output / "results.md"
    md.write_text(markdown(results, info, quick))
    js = output / "results.json"
    js.write_text(json.dumps({
        "mode": "quick" if quick else "full",
        "machine": info,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "results": [r.as_json() for r in results],
    }, indent=2, default=str) + "\n")
    return md, js
