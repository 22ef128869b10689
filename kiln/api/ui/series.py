"""Per-release time series for the dashboard's charts, sampled from the router's counters.

The router keeps cumulative counters per release (requests, 5xx, a latency histogram): the
same numbers canary analysis judges, so a chart and a verdict never disagree. A chart point
is the difference between two samples (``kiln.planning.analysis.window_between``, which also
treats a counter that went down as NGINX having restarted):

    counters at t0 ─┐
    counters at t1 ─┴─▶ window ─▶ rate = requests / (t1 - t0), error rate, p95 (bucket bound)

Samples are taken when someone looks (the app page asks every few seconds) and at most once
per ``min_interval``; each app keeps the last ``keep`` seconds. Nothing here does I/O.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field

from kiln.model import AppKey, ReleaseTraffic
from kiln.planning.analysis import window_between

Counters = dict[int, ReleaseTraffic]


@dataclass(frozen=True, kw_only=True)
class ReleasePoint:
    requests: int
    rate: float  # requests per second
    error_rate: float | None  # 0..1; None without requests
    p95_ms: float | None  # the upper bound of the bucket holding the 95th percentile


@dataclass(frozen=True, kw_only=True)
class Series:
    """Points at ``times`` (unix seconds, the end of each interval) per release."""

    times: list[float]
    releases: dict[int, list[ReleasePoint | None]]  # None: the release had no counters then

    def as_json(self) -> dict[str, object]:
        return {
            "t": self.times,
            "releases": {
                str(number): {
                    "rate": [p.rate if p else None for p in points],
                    "error_rate": [p.error_rate if p else None for p in points],
                    "p95_ms": [p.p95_ms if p else None for p in points],
                    "requests": sum(p.requests for p in points if p),
                }
                for number, points in sorted(self.releases.items())
            },
        }


@dataclass
class _AppSamples:
    samples: deque[tuple[float, Counters]] = field(default_factory=deque)


class TrafficHistory:
    """Counter samples per app, the last ``keep`` seconds, at most one per ``min_interval``."""

    def __init__(self, *, keep: float = 600.0, min_interval: float = 1.0) -> None:
        self.keep = keep
        self.min_interval = min_interval
        self._apps: dict[AppKey, _AppSamples] = {}

    def due(self, key: AppKey, now: float) -> bool:
        app = self._apps.get(key)
        return app is None or not app.samples or now - app.samples[-1][0] >= self.min_interval

    def add(self, key: AppKey, now: float, counters: Counters) -> None:
        if not self.due(key, now):
            return
        app = self._apps.setdefault(key, _AppSamples())
        app.samples.append((now, dict(counters)))
        while app.samples and now - app.samples[0][0] > self.keep:
            app.samples.popleft()

    def forget(self, key: AppKey) -> None:
        self._apps.pop(key, None)

    def prune(self, now: float) -> None:
        """Apps not sampled for ``keep`` seconds (destroyed, or NGINX no longer counts them):
        every sample they have is past keeping, so they go altogether."""
        for key in [
            k
            for k, app in self._apps.items()
            if not app.samples or now - app.samples[-1][0] > self.keep
        ]:
            del self._apps[key]

    def keys(self) -> list[AppKey]:
        return list(self._apps)

    def series(self, key: AppKey) -> Series:
        app = self._apps.get(key)
        samples = list(app.samples) if app else []
        numbers = sorted({n for _, counters in samples for n in counters})
        times: list[float] = []
        releases: dict[int, list[ReleasePoint | None]] = {n: [] for n in numbers}
        for (t0, before), (t1, after) in itertools.pairwise(samples):
            seconds = t1 - t0
            if seconds <= 0:
                continue
            times.append(t1)
            for number in numbers:
                releases[number].append(_point(before.get(number), after.get(number), seconds))
        return Series(times=times, releases=releases)

    def rate(self, key: AppKey) -> float | None:
        """Requests per second over every release in the last interval (None: not known yet)."""
        app = self._apps.get(key)
        if app is None or len(app.samples) < 2:
            return None
        (t0, before), (t1, after) = app.samples[-2], app.samples[-1]
        if t1 <= t0:
            return None
        total = sum(window_between(before.get(n), after.get(n)).requests for n in after)
        return total / (t1 - t0)


def _point(
    start: ReleaseTraffic | None, end: ReleaseTraffic | None, seconds: float
) -> ReleasePoint | None:
    if end is None:
        return None
    window = window_between(start, end)
    p95 = window.quantile_ms(0.95)
    if p95 is not None and not math.isfinite(p95):
        # Over the largest bucket: the chart shows the largest bound it knows.
        finite = [upper for upper, _ in window.latency_buckets if math.isfinite(upper)]
        p95 = finite[-1] if finite else None
    return ReleasePoint(
        requests=window.requests,
        rate=window.requests / seconds,
        error_rate=window.error_rate if window.requests else None,
        p95_ms=p95,
    )


@dataclass(frozen=True, kw_only=True)
class Usage:
    cpu_percent: float | None  # of one core, over the last ``span`` seconds; None: too early
    memory_bytes: int


class UsageHistory:
    """CPU time and memory of each instance (by container id) over the last ``span`` seconds:
    CPU % is the CPU time it used over that span, so one slow sample does not jump it."""

    def __init__(self, *, span: float = 15.0, min_span: float = 4.0) -> None:
        self.span = span
        self.min_span = min_span
        self._samples: dict[str, deque[tuple[float, float]]] = {}
        self._memory: dict[str, int] = {}

    def add(self, now: float, stats: dict[str, tuple[float, int]]) -> None:
        """``stats``: container id → (CPU seconds, cumulative; memory bytes)."""
        for gone in set(self._samples) - set(stats):
            del self._samples[gone]
            self._memory.pop(gone, None)
        for container, (cpu_seconds, memory) in stats.items():
            samples = self._samples.setdefault(container, deque())
            samples.append((now, cpu_seconds))
            while len(samples) > 2 and now - samples[1][0] >= self.span:
                samples.popleft()
            self._memory[container] = memory

    def usage(self, container: str) -> Usage | None:
        samples = self._samples.get(container)
        if not samples:
            return None
        (t0, cpu0), (t1, cpu1) = samples[0], samples[-1]
        cpu = None
        if t1 - t0 >= self.min_span and cpu1 >= cpu0:
            cpu = (cpu1 - cpu0) / (t1 - t0) * 100
        return Usage(cpu_percent=cpu, memory_bytes=self._memory[container])
