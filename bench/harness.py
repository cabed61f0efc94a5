"""What every benchmark uses: timing, statistics, results and the shared context.

A benchmark is a module of this package with a coroutine function::

    async def run(bench: Bench) -> list[Result]:
        ...

It is listed in :data:`bench.suite.BENCHMARKS`. It runs inside the Twisted reactor (one
reactor run for the whole suite), starts what it needs through ``bench`` (XMPP servers,
backends, temporary folders: all cleaned up at the end), and returns one
:class:`Result` per measured figure. Sizes come from :meth:`Bench.size`, so that the
quick mode stays quick; repetitions from :attr:`Bench.repeat`.

Each figure is compared with a baseline measured in the same run, side by side
(alternating when practical): this machine is shared and noisy, absolute times vary
while ratios hold.
"""

from __future__ import annotations

import inspect
import math
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer


@dataclass(frozen=True)
class Stats:
    """Summary of repeated measurements: median, p95 and spread (min to max)."""

    median: float
    p95: float
    low: float
    high: float
    n: int
    unit: str = "s"

    @classmethod
    def of(cls, samples: list[float], unit: str = "s") -> Stats:
        if not samples:
            raise ValueError("no sample to summarise")
        ordered = sorted(samples)
        return cls(median=statistics.median(ordered), p95=percentile(ordered, 95),
                   low=ordered[0], high=ordered[-1], n=len(ordered), unit=unit)

    def ratio_to(self, baseline: Stats) -> float:
        """How many times this median is the baseline's (inf when the baseline is 0)."""
        if baseline.median == 0:
            return math.inf
        return self.median / baseline.median

    def text(self) -> str:
        """``median (low-high)``, with a unit scaled for reading."""
        if self.n == 1:
            return format_value(self.median, self.unit)
        return (f"{format_value(self.median, self.unit)} "
                f"({format_value(self.low, self.unit, bare=True)}"
                f"–{format_value(self.high, self.unit)})")


def percentile(ordered: list[float], pct: float) -> float:
    """The ``pct`` percentile of sorted values (nearest rank, interpolated)."""
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * pct / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def format_value(value: float, unit: str, bare: bool = False) -> str:
    """A value for the table: seconds as s/ms/µs, other units as given."""
    if unit == "s":
        for scale, name in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if abs(value) >= scale or scale == 1e-6:
                number = f"{value / scale:.3g}"
                return number if bare else f"{number} {name}"
    number = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return number if bare else f"{number} {unit}"


Clock = Callable[[], float]


def measure(fn: Callable[[], Any], repeat: int, warmup: int = 1,
            clock: Clock = time.perf_counter) -> list[float]:
    """Call ``fn()`` ``warmup`` times unmeasured, then ``repeat`` times; the durations."""
    for __ in range(warmup):
        fn()
    samples = []
    for __ in range(repeat):
        start = clock()
        fn()
        samples.append(clock() - start)
    return samples


async def measure_async(fn: Callable[[], Awaitable[Any] | Any], repeat: int,
                        warmup: int = 1, clock: Clock = time.perf_counter) -> list[float]:
    """:func:`measure` for a function returning a Deferred or a coroutine."""
    for __ in range(warmup):
        await _settle(fn())
    samples = []
    for __ in range(repeat):
        start = clock()
        await _settle(fn())
        samples.append(clock() - start)
    return samples


async def measure_pair(fn: Callable[[], Any], baseline: Callable[[], Any], repeat: int,
                       warmup: int = 1, clock: Clock = time.perf_counter,
                       prepare: Callable[[], Any] | None = None
                       ) -> tuple[list[float], list[float]]:
    """Measure ``fn`` and ``baseline`` alternately (each may be sync or async).

    Alternating puts both under the same noise: the ratio of their medians is the figure
    that holds from one run (and machine) to the next.  ``prepare``, if given, is called
    (untimed) before each call of ``fn``, e.g. to reset what ``fn`` builds.
    """
    measured, base = await measure_alternating([fn, baseline], repeat, warmup, clock,
                                               {0: prepare} if prepare else None)
    return measured, base


async def measure_alternating(fns: list[Callable[[], Any]], repeat: int, warmup: int = 1,
                              clock: Clock = time.perf_counter,
                              prepare: dict[int, Callable[[], Any]] | None = None
                              ) -> list[list[float]]:
    """Measure each of ``fns`` in turn, ``repeat`` rounds (see :func:`measure_pair`);
    the samples of each.  ``prepare[i]``, if given, is called (untimed) before each
    call of ``fns[i]``."""
    prepare = prepare or {}
    for __ in range(warmup):
        for index, fn in enumerate(fns):
            if index in prepare:
                await _settle(prepare[index]())
            await _settle(fn())
    samples: list[list[float]] = [[] for __ in fns]
    for __ in range(repeat):
        for index, fn in enumerate(fns):
            if index in prepare:
                await _settle(prepare[index]())
            start = clock()
            await _settle(fn())
            samples[index].append(clock() - start)
    return samples


async def _settle(value: Any) -> Any:
    if isinstance(value, defer.Deferred):
        return await value
    if inspect.isawaitable(value):
        return await defer.ensureDeferred(value)
    return value


@dataclass
class Result:
    """One figure of the table.

    ``ratio`` is measured/baseline (or the figure itself for absolute targets), ``met``
    whether the target holds (``None``: reported only).
    """

    id: str
    what: str
    setting: str
    measured: Stats
    target: str
    met: bool | None
    baseline_what: str = ""
    baseline: Stats | None = None
    ratio: float | None = None
    notes: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data["ratio"] is not None and math.isinf(data["ratio"]):
            data["ratio"] = None
        return data

    @classmethod
    def failed(cls, bench_id: str, what: str, error: str) -> Result:
        """A benchmark that could not run: reported, and the run exits non-zero."""
        return cls(id=bench_id, what=what, setting="", measured=Stats.of([math.nan]),
                   target="", met=None, error=error)


def ratio_result(bench_id: str, what: str, setting: str, measured: list[float],
                 baseline_what: str, baseline: list[float], target: str,
                 holds: Callable[[float], bool], unit: str = "s", **extra: Any) -> Result:
    """A :class:`Result` comparing two series of samples by the ratio of their medians.

    ``holds(ratio)`` tells whether the target is met (``ratio`` = measured / baseline).
    """
    m, b = Stats.of(measured, unit), Stats.of(baseline, unit)
    ratio = m.ratio_to(b)
    return Result(id=bench_id, what=what, setting=setting, measured=m, target=target,
                  met=holds(ratio), baseline_what=baseline_what, baseline=b,
                  ratio=ratio, **extra)


class Bench:
    """The context given to every benchmark.

    - ``quick``: small sizes and few repetitions (``.ci/run`` proves the suite works);
    - :meth:`size` and :attr:`repeat`: the sizes and repetitions of the current mode;
    - :meth:`server`: a private Prosody or ejabberd (started once, stopped at the end);
    - :meth:`postgresql_url`: a new database on a private PostgreSQL server;
    - :meth:`tempdir`: a folder removed at the end;
    - :meth:`on_close`: a clean-up to run at the end (may return a Deferred).
    """

    def __init__(self, quick: bool, workdir: Path | None = None) -> None:
        self.quick = quick
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="libervia-bench-"))
        self.repeat = 5 if quick else 21
        self._closers: list[Callable[[], Any]] = []
        self._pool = None
        self._postgresql: Any = None
        self._databases: list[str] = []

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def tempdir(self, label: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{label}-", dir=self.workdir))

    def on_close(self, closer: Callable[[], Any]) -> None:
        self._closers.append(closer)

    def server(self, kind: str, **options: Any) -> Any:
        """A running private server of ``kind`` (``prosody``/``ejabberd``): ServerInfo.

        ``options`` are those of ``ServerPool.get`` (e.g. ``max_items``, the per-node
        cap of the pubsub service); one server is started per distinct set of options.
        """
        if self._pool is None:
            from tests.servers.fixtures import ServerPool

            self._pool = ServerPool()
            self.on_close(self._pool.close)
        return self._pool.get(kind, **options)

    def postgresql_url(self) -> str:
        """The URL of a new, empty database on a private PostgreSQL server (started
        once, stopped at the end)."""
        from sqlalchemy import create_engine, text

        if self._postgresql is None:
            import pytest

            from tests.storage_fixtures import start_throwaway_postgres

            try:
                self._postgresql = start_throwaway_postgres()
            except (pytest.skip.Exception, pytest.fail.Exception) as e:
                # what stops a test is a failed row here
                raise RuntimeError(f"no PostgreSQL server: {e}") from None
            self.on_close(self._postgresql.stop)
        name = f"libervia_bench_{len(self._databases)}"
        self._databases.append(name)
        admin = create_engine(self._postgresql.url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self._postgresql.url.set(database=name).render_as_string(
            hide_password=False)

    async def close(self) -> None:
        """Run the clean-ups, latest first; report the failures after running them all."""
        errors = []
        while self._closers:
            closer = self._closers.pop()
            try:
                await _settle(closer())
            except Exception as e:  # noqa: BLE001 - every clean-up must get its turn
                errors.append(f"{closer!r}: {e}")
        if self._own_workdir:
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise RuntimeError("clean-up failed:\n" + "\n".join(errors))
