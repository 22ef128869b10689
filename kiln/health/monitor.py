"""``HealthMonitor``: one asyncio task per tracked instance, turning probe results into
``HealthStatus`` and telling the controller when an instance's readiness or liveness flips.

    track(id) ──▶ task: probe ──▶ counters ──▶ HealthStatus ──flip?──▶ on_change(id)
                   ▲                                                   (controller reconciles
                   └── sleep until the next probe is due                the instance's app now)

Cadence. Until an instance has been ready once, readiness is probed quickly instead of every
``readiness.interval``: a new instance should join the router a moment after it starts serving,
not up to one interval later. The first check runs at once, the next 20 every 10 ms, then
every ``startup_interval`` (0.1 s), for up to a minute after the instance started. Most apps
listen within a few tens of milliseconds of their start, later on a busy machine; a check that
comes late adds its lateness to every instance of a rolling deploy, one after the other (0.1 s
steps, then 10, 20, 40, 80 ms steps, both cost rollouts tens of milliseconds per instance in
bench/scale.py). A check of a port nobody listens on yet is a refused connect, a few
microseconds. Afterwards readiness runs at its own interval. Liveness starts once the instance
is past ``liveness.grace`` since it started, or has been ready once, and runs at
``liveness.interval``. When readiness and
liveness are the same probe (the default), one check feeds both counters.

Quiet apps. The controller says which instances belong to an app that gets no requests
(``set_quiet``; kiln/controller/quiet.py). Once ready, those are checked every ``idle_interval``
instead (when it is longer), like Envoy's "no traffic interval": a box of idle apps should not
connect to every instance every second. A failed check is followed up at the interval; when
requests come again, the instance is checked at once and then at its interval.

Thresholds. ``ready`` turns true after ``healthy_threshold`` readiness passes in a row and
false after ``unhealthy_threshold`` failures in a row. ``live`` turns false after liveness's
``unhealthy_threshold`` failures in a row and stays false: such an instance is replaced, not
revived.

The monitor never raises out of a probe task; cancellation (``untrack``, ``close``) is the
only way a task ends. ``track`` and ``untrack`` must be called on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from kiln.health.probes import ExecFn, ProbeResult, run_probe
from kiln.model import HealthStatus
from kiln.spec import Probe

log = logging.getLogger(__name__)

_MIN_INTERVAL = 0.01
"""Floor for any probe interval, so that an ``interval: 0`` spec cannot spin the event loop."""

_STARTUP_STEP = 0.01
"""The wait between the first startup checks."""

_STARTUP_QUICK_CHECKS = 20
"""Startup checks ``_STARTUP_STEP`` apart (after the one at once) before they slow down to
``startup_interval``: the first 0.2 s after the start, when most apps begin to listen."""

_STARTUP_CADENCE_FOR = timedelta(seconds=60)
"""How long after its start an instance that has not been ready yet is checked at the startup
cadence; after that, at its readiness interval like any other: an instance that never turns ready
(a broken release kept by a long deadline) should not be probed ten times a second for as long as
it runs."""


def startup_delay(checks_made: int, cap: float) -> float:
    """The wait before the next readiness check of an instance not ready yet, after
    ``checks_made`` checks: 10 ms for the first 20, then ``cap`` (never more than ``cap``)."""
    return min(cap, _STARTUP_STEP if checks_made <= _STARTUP_QUICK_CHECKS else cap)


_MAX_INCONCLUSIVE = 5
"""Inconclusive probes in a row (the loop woke too late to judge them) before the next one counts
as a failure after all: an overloaded kiln must not mistake itself for dead instances, and must not
keep a hung one forever either."""

_RETRY_AFTER_BUG = 1.0
"""Pause after an unexpected error inside a probe task, before it tries again."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Tracked:
    """The mutable per-instance state; only its own task writes to it."""

    instance_id: str
    readiness: Probe
    liveness: Probe
    host: str | None
    port: int | None
    started_at: datetime
    exec_fn: ExecFn | None
    status: HealthStatus
    ever_ready: bool
    ready_passes: int = 0
    ready_failures: int = 0
    live_failures: int = 0
    checks_passed: int = 0  # every probe run, for metrics
    checks_failed: int = 0
    inconclusive: int = 0  # inconclusive probes in a row
    startup_checks: int = 0  # readiness checks made before the first ready
    quiet: bool = False  # its app gets no requests: checks every idle_interval
    next_ready: float = 0.0  # loop time of the next readiness (and liveness) check
    next_live: float = 0.0
    wakeup: asyncio.Future[None] | None = None  # what the task sleeps on, between checks

    @property
    def shared(self) -> bool:
        return self.readiness == self.liveness


class HealthMonitor:
    def __init__(
        self,
        *,
        on_change: Callable[[str], None],
        clock: Callable[[], datetime] = _utc_now,
        startup_interval: float = 0.1,
    ) -> None:
        self._on_change = on_change
        self._clock = clock
        self._startup_interval = max(startup_interval, _MIN_INTERVAL)
        self._tracked: dict[str, _Tracked] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Cancelled tasks still finishing; close() waits for them so none is left pending.
        self._stopping: set[asyncio.Task[None]] = set()

    # --- API -----------------------------------------------------------------------------

    def track(
        self,
        instance_id: str,
        *,
        readiness: Probe,
        liveness: Probe,
        host: str | None,
        port: int | None,
        started_at: datetime,
        exec_fn: ExecFn | None = None,
        assume_ready: bool = False,
        quiet: bool = False,
    ) -> None:
        """Start probing an instance; a no-op if it is already tracked.

        ``assume_ready``: for an instance adopted after a kiln restart that was already in the
        router. It starts ready (no traffic gap) and is re-checked right away.
        ``quiet``: its app gets no requests (``set_quiet``).
        """
        if instance_id in self._tasks:
            return
        now = self._clock()
        tracked = _Tracked(
            instance_id=instance_id,
            readiness=readiness,
            liveness=liveness,
            host=host,
            port=port,
            started_at=started_at,
            exec_fn=exec_fn,
            status=HealthStatus(ready=True, ready_since=now) if assume_ready else HealthStatus(),
            ever_ready=assume_ready,
            ready_passes=readiness.healthy_threshold if assume_ready else 0,
            quiet=quiet,
        )
        self._tracked[instance_id] = tracked
        self._tasks[instance_id] = asyncio.get_running_loop().create_task(
            self._run(tracked), name=f"kiln-health:{instance_id}"
        )

    def untrack(self, instance_id: str) -> None:
        """Stop probing an instance and forget its status. Unknown ids are fine."""
        self._tracked.pop(instance_id, None)
        task = self._tasks.pop(instance_id, None)
        if task is not None and not task.done():
            task.cancel()
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    def set_quiet(self, instance_id: str, quiet: bool) -> None:
        """Whether the instance's app gets requests. While quiet, an instance that has been ready
        is checked every ``idle_interval`` of its probes (when longer than ``interval``); when
        requests come again it is checked at once, then every ``interval``. Unknown ids are
        fine."""
        t = self._tracked.get(instance_id)
        if t is None or t.quiet == quiet:
            return
        t.quiet = quiet
        if not quiet:
            now = asyncio.get_running_loop().time()
            t.next_ready = min(t.next_ready, now)
            t.next_live = min(t.next_live, now)
            if t.wakeup is not None and not t.wakeup.done():
                t.wakeup.set_result(None)

    def status(self, instance_id: str) -> HealthStatus:
        tracked = self._tracked.get(instance_id)
        return tracked.status if tracked is not None else HealthStatus()

    def check_counts(self, instance_id: str) -> tuple[int, int]:
        """Probes run on the instance so far: (passed, failed); (0, 0) when not tracked."""
        tracked = self._tracked.get(instance_id)
        return (tracked.checks_passed, tracked.checks_failed) if tracked is not None else (0, 0)

    def tracked_ids(self) -> frozenset[str]:
        """The instances being probed (for the controller to untrack the ones that are gone)."""
        return frozenset(self._tasks)

    async def close(self) -> None:
        """Cancel every probe task and wait until each has ended."""
        for instance_id in list(self._tasks):
            self.untrack(instance_id)
        pending = list(self._stopping)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # --- the per-instance task -------------------------------------------------------------

    async def _run(self, t: _Tracked) -> None:
        loop = asyncio.get_running_loop()
        t.next_ready = t.next_live = loop.time()
        while True:
            try:
                now = loop.time()
                if t.shared:
                    if now >= t.next_ready or (self._liveness_due(t) and now >= t.next_live):
                        result = await self._probe(t, t.readiness)
                        self._feed_readiness(t, result)
                        # The same check is a liveness check too, if one is due.
                        if self._liveness_due(t) and now >= t.next_live:
                            self._feed_liveness(t, result)
                            t.next_live = now + self._interval(t, t.liveness)
                        t.next_ready = now + self._after_readiness_check(t)
                else:
                    if now >= t.next_ready:
                        self._feed_readiness(t, await self._probe(t, t.readiness))
                        t.next_ready = now + self._after_readiness_check(t)
                    if self._liveness_due(t) and now >= t.next_live:
                        self._feed_liveness(t, await self._probe(t, t.liveness))
                        t.next_live = now + self._interval(t, t.liveness)
                wake = t.next_ready
                if t.status.live:
                    wake = min(wake, self._liveness_wake(t, loop.time(), t.next_live))
                await self._sleep_until(t, loop, wake)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("health check of %s failed unexpectedly; retrying", t.instance_id)
                await asyncio.sleep(_RETRY_AFTER_BUG)

    @staticmethod
    async def _sleep_until(t: _Tracked, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """``asyncio.sleep`` until ``when``, on a future ``set_quiet`` can end early."""
        wakeup: asyncio.Future[None] = loop.create_future()
        timer = loop.call_at(when, _wake, wakeup)
        t.wakeup = wakeup
        try:
            await wakeup
        finally:
            timer.cancel()
            t.wakeup = None

    async def _probe(self, t: _Tracked, probe: Probe) -> ProbeResult:
        result = await run_probe(probe, host=t.host, port=t.port, exec_fn=t.exec_fn)
        if result.inconclusive:
            t.inconclusive += 1
            if t.inconclusive < _MAX_INCONCLUSIVE:
                return result  # neither counter moves
            result = ProbeResult(
                False, result.detail.replace("not counted", f"counted: {t.inconclusive} in a row")
            )
        t.inconclusive = 0
        if result.ok:
            t.checks_passed += 1
        else:
            t.checks_failed += 1
        return result

    def _after_readiness_check(self, t: _Tracked) -> float:
        """The wait until the next readiness check (one more startup check counted)."""
        if not t.ever_ready and self._clock() - t.started_at < _STARTUP_CADENCE_FOR:
            t.startup_checks += 1
            return startup_delay(t.startup_checks, self._startup_interval)
        return self._interval(t, t.readiness)

    @staticmethod
    def _interval(t: _Tracked, probe: Probe) -> float:
        """The wait between two checks of a running instance: ``idle_interval`` while its app
        is quiet (if that is longer) and its last checks passed, else ``interval``. A failed
        check is followed up at the interval (HAProxy's "fastinter"), so a broken instance of
        a quiet app is replaced one idle interval plus the usual failures in a row after it
        broke, not one idle interval per failure."""
        interval = probe.interval
        if t.quiet and probe.idle_interval > interval and not (t.ready_failures or t.live_failures):
            interval = probe.idle_interval
        return max(interval, _MIN_INTERVAL)

    def _liveness_due(self, t: _Tracked) -> bool:
        """Liveness counts once the grace period is over or the instance was ready once."""
        if not t.status.live:
            return False
        if t.ever_ready:
            return True
        return self._clock() - t.started_at >= timedelta(seconds=t.liveness.grace)

    def _liveness_wake(self, t: _Tracked, now: float, next_live: float) -> float:
        if self._liveness_due(t):
            return next_live
        # Still in grace: wake when it ends (readiness may end it sooner by passing).
        remaining = t.started_at + timedelta(seconds=t.liveness.grace) - self._clock()
        return max(next_live, now + max(remaining.total_seconds(), 0.0))

    def _feed_readiness(self, t: _Tracked, result: ProbeResult) -> None:
        if result.inconclusive:
            return
        status = t.status
        error = None if result.ok else result.detail
        if not status.checked or status.last_error != error:
            # A new status only when something a reader sees changes: the steady state (a
            # ready instance passing again, every interval) allocates nothing.
            status = replace(status, checked=True, last_error=error)
        flipped = False
        if result.ok:
            t.ready_passes += 1
            t.ready_failures = 0
            if not status.ready and t.ready_passes >= t.readiness.healthy_threshold:
                status = replace(status, ready=True, ready_since=self._clock())
                t.ever_ready = True
                flipped = True
        else:
            t.ready_failures += 1
            t.ready_passes = 0
            if status.ready and t.ready_failures >= t.readiness.unhealthy_threshold:
                status = replace(status, ready=False, ready_since=None)
                flipped = True
        self._publish(t, status, flipped)

    def _feed_liveness(self, t: _Tracked, result: ProbeResult) -> None:
        if result.inconclusive:
            return
        flipped = False
        if result.ok:
            t.live_failures = 0
            # Leave last_error alone: a liveness pass must not hide a readiness failure.
            status = t.status
        else:
            t.live_failures += 1
            detail = result.detail if t.shared else f"liveness: {result.detail}"
            status = replace(t.status, last_error=detail)
            if t.live_failures >= t.liveness.unhealthy_threshold:
                status = replace(status, live=False)
                flipped = True
        self._publish(t, status, flipped)

    def _publish(self, t: _Tracked, status: HealthStatus, flipped: bool) -> None:
        if self._tracked.get(t.instance_id) is not t:
            return  # untracked while the probe ran: nobody wants to hear about it
        t.status = status
        if flipped:
            try:
                self._on_change(t.instance_id)
            except Exception:
                log.exception("health change handler failed for %s", t.instance_id)


def _wake(wakeup: asyncio.Future[None]) -> None:
    if not wakeup.done():
        wakeup.set_result(None)


__all__ = ["HealthMonitor"]
