"""The health monitor against a real HTTP server: readiness, liveness, flips, untrack, close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from kiln.health import HealthMonitor
from kiln.health.monitor import startup_delay
from kiln.model import HealthStatus
from kiln.spec import Probe

from .support import HANG, ScriptedHttpServer, eventually

STARTED = datetime(2026, 1, 1, tzinfo=UTC)


def fast(path: str, **fields: float) -> Probe:
    """A probe that checks back to back (interval 0 is floored by the monitor), with a timeout
    generous enough that a loaded machine does not turn answers into timeouts."""
    settings: dict[str, float] = {"interval": 0, "timeout": 2, "grace": 0.0}
    settings.update(fields)
    return Probe(http=path, **settings)  # type: ignore[arg-type]


class Changes:
    """Records on_change calls, like the controller's "reconcile this app now" hook."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.server: ScriptedHttpServer | None = None
        self.requests_seen: list[int] = []  # requests the server had when each change came

    def __call__(self, instance_id: str) -> None:
        self.calls.append(instance_id)
        if self.server is not None:
            self.requests_seen.append(len(self.server.requests))


@pytest.fixture
def changes() -> Changes:
    return Changes()


@pytest.fixture
async def monitor(changes: Changes) -> AsyncIterator[HealthMonitor]:
    m = HealthMonitor(on_change=changes)
    yield m
    await m.close()


def track(
    monitor: HealthMonitor,
    server: ScriptedHttpServer,
    instance_id: str = "r1-a",
    *,
    readiness: Probe,
    liveness: Probe | None = None,
    started_at: datetime = STARTED,
    assume_ready: bool = False,
) -> None:
    monitor.track(
        instance_id,
        readiness=readiness,
        liveness=liveness or readiness,
        host="127.0.0.1",
        port=server.port,
        started_at=started_at,
        assume_ready=assume_ready,
    )


async def test_unknown_instance_has_the_default_status(monitor: HealthMonitor) -> None:
    assert monitor.status("nobody") == HealthStatus()


async def test_instance_becomes_ready_after_healthy_threshold_passes_in_a_row(
    monitor: HealthMonitor, server: ScriptedHttpServer, changes: Changes
) -> None:
    # 500, 200, 500, then healthy: the lone pass must not count with a threshold of 2.
    server.behaviour = lambda path, n: 200 if n == 2 or n >= 4 else 500
    changes.server = server
    track(monitor, server, readiness=fast("/ready", healthy_threshold=2))
    await eventually(lambda: monitor.status("r1-a").ready, "the instance is ready")
    assert changes.requests_seen == [5]
    status = monitor.status("r1-a")
    assert status.checked and status.live and status.last_error is None
    assert status.ready_since is not None
    assert changes.calls == ["r1-a"]


async def test_startup_probing_does_not_wait_for_the_readiness_interval(
    monitor: HealthMonitor, server: ScriptedHttpServer
) -> None:
    # The app serves only from its 6th request on. With a 60 s readiness interval this
    # could only pass within the deadline through the fast startup cadence.
    server.behaviour = lambda path, n: 200 if n >= 6 else 500
    track(
        monitor,
        server,
        readiness=fast("/ready", interval=60, timeout=1),
        started_at=datetime.now(UTC),  # just started: the startup cadence applies
    )
    await eventually(lambda: monitor.status("r1-a").ready, "the instance is ready", timeout=20)
    assert server.count("/ready") == 6


async def test_not_yet_ready_instance_reports_the_last_error(
    monitor: HealthMonitor, server: ScriptedHttpServer
) -> None:
    server.behaviour = lambda path, n: 503
    track(monitor, server, readiness=fast("/ready", grace=3600))
    await eventually(lambda: monitor.status("r1-a").checked, "a check finished")
    status = monitor.status("r1-a")
    assert (status.ready, status.last_error) == (False, "GET /ready → 503")


async def test_ready_instance_flips_back_after_unhealthy_threshold_failures(
    monitor: HealthMonitor, server: ScriptedHttpServer, changes: Changes
) -> None:
    failing = False
    server.behaviour = lambda path, n: 500 if failing and path == "/ready" else 200
    track(monitor, server, readiness=fast("/ready", unhealthy_threshold=3), liveness=fast("/live"))
    changes.server = server
    await eventually(lambda: monitor.status("r1-a").ready, "the instance is ready")
    failing = True
    await eventually(lambda: not monitor.status("r1-a").ready, "the instance is not ready")
    assert changes.calls == ["r1-a", "r1-a"]
    # Exactly three failures in a row took it out.
    answers = [a for p, a in zip(server.requests, server.answers, strict=True) if p == "/ready"]
    before_flip = answers[: server.requests[: changes.requests_seen[1]].count("/ready")]
    assert before_flip[-4:] == [200, 500, 500, 500]
    status = monitor.status("r1-a")
    assert status.last_error == "GET /ready → 500"
    assert status.ready_since is None


async def test_recovered_instance_becomes_ready_again(
    monitor: HealthMonitor, server: ScriptedHttpServer, changes: Changes
) -> None:
    failing = False
    server.behaviour = lambda path, n: 500 if failing else 200
    track(monitor, server, readiness=fast("/ready", unhealthy_threshold=1), liveness=fast("/live"))
    await eventually(lambda: monitor.status("r1-a").ready, "ready")
    failing = True
    await eventually(lambda: not monitor.status("r1-a").ready, "not ready")
    failing = False
    await eventually(lambda: monitor.status("r1-a").ready, "ready again")
    assert changes.calls == ["r1-a"] * 3
    assert monitor.status("r1-a").last_error is None


async def test_liveness_failures_after_grace_mark_the_instance_dead_for_good(
    monitor: HealthMonitor, server: ScriptedHttpServer, changes: Changes
) -> None:
    server.behaviour = lambda path, n: 200 if path == "/ready" else 500
    track(
        monitor,
        server,
        readiness=fast("/ready"),
        liveness=fast("/live", unhealthy_threshold=2, grace=0),
    )
    await eventually(lambda: not monitor.status("r1-a").live, "the instance is not live")
    assert server.count("/live") == 2
    # It stays dead even if the endpoint recovers: the controller replaces it.
    server.behaviour = lambda path, n: 200
    probes_at_death = server.count("/ready")
    await eventually(lambda: server.count("/ready") >= probes_at_death + 5, "more readiness checks")
    assert monitor.status("r1-a").live is False
    assert server.count("/live") == 2
    assert changes.calls.count("r1-a") == 2  # ready, then not live


async def test_liveness_waits_for_grace_while_the_instance_was_never_ready(
    changes: Changes, server: ScriptedHttpServer
) -> None:
    now = STARTED
    monitor = HealthMonitor(on_change=changes, clock=lambda: now, startup_interval=0.01)
    try:
        server.behaviour = lambda path, n: 500
        track(
            monitor,
            server,
            readiness=fast("/ready"),
            liveness=fast("/live", grace=30, unhealthy_threshold=1),
        )
        await eventually(lambda: server.count("/ready") >= 10, "ten readiness checks")
        assert server.count("/live") == 0
        assert monitor.status("r1-a").live is True
        # Grace runs out: now liveness counts.
        now = STARTED + timedelta(seconds=31)
        await eventually(lambda: not monitor.status("r1-a").live, "the instance is not live")
        assert changes.calls == ["r1-a"]
    finally:
        await monitor.close()


async def test_identical_probes_run_once_and_feed_both_verdicts(
    monitor: HealthMonitor, server: ScriptedHttpServer, changes: Changes
) -> None:
    failing = False
    server.behaviour = lambda path, n: 500 if failing else 200
    probe = fast("/health", unhealthy_threshold=2)
    track(monitor, server, readiness=probe, liveness=probe)
    await eventually(lambda: monitor.status("r1-a").ready, "ready")
    failing = True
    await eventually(lambda: not monitor.status("r1-a").live, "not live")
    status = monitor.status("r1-a")
    assert (status.ready, status.live) == (False, False)
    assert set(server.requests) == {"/health"}
    assert changes.calls.count("r1-a") >= 3  # ready, not ready, not live


async def test_adopted_instance_starts_ready_and_is_rechecked(
    monitor: HealthMonitor, server: ScriptedHttpServer, changes: Changes
) -> None:
    server.behaviour = lambda path, n: 500
    track(monitor, server, readiness=fast("/ready", unhealthy_threshold=2), assume_ready=True)
    assert monitor.status("r1-a").ready is True
    await eventually(lambda: not monitor.status("r1-a").ready, "the instance is not ready")
    assert server.count("/ready") >= 2
    assert changes.calls[0] == "r1-a"


async def test_tracking_twice_is_one_instance(
    monitor: HealthMonitor, server: ScriptedHttpServer, changes: Changes
) -> None:
    track(monitor, server, readiness=fast("/ready"))
    track(monitor, server, readiness=fast("/ready"))
    await eventually(lambda: monitor.status("r1-a").ready, "ready")
    assert monitor.tracked_ids() == {"r1-a"}
    assert changes.calls == ["r1-a"]


async def test_untrack_stops_probing_and_forgets_the_status(changes: Changes) -> None:
    monitor = HealthMonitor(on_change=changes, startup_interval=0.01)
    first = ScriptedHttpServer(lambda path, n: 200)
    control = ScriptedHttpServer(lambda path, n: 500)
    await first.start()
    await control.start()
    try:
        track(monitor, first, "r1-a", readiness=fast("/ready"))
        await eventually(lambda: monitor.status("r1-a").ready, "ready")
        monitor.untrack("r1-a")
        monitor.untrack("r1-a")  # twice is fine
        assert monitor.status("r1-a") == HealthStatus()
        assert monitor.tracked_ids() == frozenset()
        seen = len(first.requests)
        # A second instance gets probed many times meanwhile; the first one no more.
        track(monitor, control, "r1-b", readiness=fast("/ready"))
        await eventually(lambda: len(control.requests) >= 20, "twenty checks of the other one")
        assert len(first.requests) <= seen + 1  # at most the one already in flight
    finally:
        await monitor.close()
        await first.stop()
        await control.stop()


async def test_close_cancels_probes_in_flight(changes: Changes, server: ScriptedHttpServer) -> None:
    server.behaviour = lambda path, n: HANG
    monitor = HealthMonitor(on_change=changes)
    track(monitor, server, "r1-a", readiness=fast("/ready", interval=5, timeout=5))
    track(monitor, server, "r1-b", readiness=fast("/ready", interval=5, timeout=5))
    await eventually(lambda: server.count("/ready") == 2, "both checks are in flight")
    await monitor.close()
    assert monitor.tracked_ids() == frozenset()
    assert all(task.done() for task in asyncio.all_tasks() if task.get_name().startswith("kiln-"))


async def test_a_broken_exec_or_handler_never_stops_the_checks(changes: Changes) -> None:
    calls = 0

    async def fake_exec_that_breaks(command: Sequence[str], timeout: float) -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("exec failed")
        return 0

    def on_change_that_breaks(instance_id: str) -> None:
        changes(instance_id)
        raise RuntimeError("handler bug")

    monitor = HealthMonitor(on_change=on_change_that_breaks)
    try:
        probe = Probe(command=["check"], interval=0, timeout=2)
        monitor.track(
            "r1-a",
            readiness=probe,
            liveness=probe,
            host=None,
            port=None,
            started_at=STARTED,
            exec_fn=fake_exec_that_breaks,
        )
        await eventually(lambda: monitor.status("r1-a").ready, "ready despite exec errors")
        await eventually(lambda: calls >= 6, "checks go on after the handler failed")
        assert changes.calls == ["r1-a"]
    finally:
        await monitor.close()


async def test_probes_kiln_woke_late_for_count_only_after_five_in_a_row(changes: Changes) -> None:
    """An overloaded kiln (its loop blocked past a probe's deadline) must not take a ready
    instance out of the router for its own lateness; five such probes in a row do count, so a
    hung instance is not kept forever."""
    calls = 0
    blocked_from: int | None = None

    async def fake_exec(command: Sequence[str], timeout: float) -> int:
        nonlocal calls
        calls += 1
        if blocked_from is None:
            return 0
        time.sleep(timeout * 4)  # noqa: ASYNC251 - kiln's loop, busy past the deadline
        await asyncio.sleep(3600)  # and no answer comes either
        return 0

    calls_at_change: list[int] = []

    def on_change(instance_id: str) -> None:
        changes(instance_id)
        calls_at_change.append(calls)

    monitor = HealthMonitor(on_change=on_change)
    try:
        probe = Probe(command=["check"], interval=0, timeout=0.1, unhealthy_threshold=1)
        monitor.track(
            "r1-a",
            readiness=probe,
            liveness=probe,
            host=None,
            port=None,
            started_at=STARTED,
            exec_fn=fake_exec,
        )
        await eventually(lambda: monitor.status("r1-a").ready, "ready")
        blocked_from = calls
        await eventually(lambda: not monitor.status("r1-a").ready, "not ready after all")
        # Four inconclusive probes, the fifth counted (and flipped readiness).
        assert calls_at_change[-1] - blocked_from == 5
        assert monitor.check_counts("r1-a")[1] >= 1
        assert "5 in a row" in (monitor.status("r1-a").last_error or "")
    finally:
        await monitor.close()


async def test_an_instance_never_ready_for_a_minute_is_checked_at_its_interval(
    changes: Changes, server: ScriptedHttpServer
) -> None:
    now = STARTED + timedelta(seconds=1)
    monitor = HealthMonitor(on_change=changes, clock=lambda: now, startup_interval=0.01)
    try:
        server.behaviour = lambda path, n: 500
        track(monitor, server, readiness=Probe(http="/ready", interval=3600, timeout=2))
        await eventually(lambda: server.count("/ready") >= 5, "quick startup checks")
        # A minute on and still not ready: no longer ten checks a second, but one an interval.
        now = STARTED + timedelta(seconds=61)
        await eventually(lambda: server.count("/ready") >= 6, "one more check")
        settled = server.count("/ready")
        await asyncio.sleep(0.3)  # ~30 startup checks' worth
        assert server.count("/ready") == settled
        assert monitor.status("r1-a").ready is False
    finally:
        await monitor.close()


async def test_quiet_instance_is_checked_every_idle_interval_and_at_once_when_requests_come(
    monitor: HealthMonitor, server: ScriptedHttpServer, changes: Changes
) -> None:
    server.behaviour = lambda path, n: 200
    track(
        monitor, server, readiness=fast("/ready", interval=0.02, timeout=0.02, idle_interval=3600)
    )
    await eventually(lambda: monitor.status("r1-a").ready, "ready")
    await eventually(lambda: server.count("/ready") >= 5, "checks every 20 ms")
    monitor.set_quiet("r1-a", True)
    await eventually(lambda: server.count("/ready") >= 6, "the check already due")
    settled = server.count("/ready")
    await asyncio.sleep(0.3)  # ~15 intervals' worth
    assert server.count("/ready") == settled
    # Requests come again: a check at once (not an hour from now), then every interval.
    server.behaviour = lambda path, n: 500
    monitor.set_quiet("r1-a", False)
    await eventually(lambda: not monitor.status("r1-a").ready, "a failing app is seen at once")
    await eventually(
        lambda: monitor.status("r1-a").last_error == "GET /ready → 500", "the 500 is the reason"
    )


async def test_a_failed_check_of_a_quiet_instance_is_followed_up_at_the_interval(
    monitor: HealthMonitor, server: ScriptedHttpServer
) -> None:
    server.behaviour = lambda path, n: 200
    probe = fast("/ready", interval=0.02, timeout=0.02, idle_interval=3600, unhealthy_threshold=3)
    track(monitor, server, readiness=probe)
    await eventually(lambda: monitor.status("r1-a").ready, "ready")
    server.behaviour = lambda path, n: 500
    await eventually(lambda: monitor.status("r1-a").last_error is not None, "a first failure")
    monitor.set_quiet("r1-a", True)
    # The next failures come at the interval, not an hour apart: the instance turns not ready.
    await eventually(lambda: not monitor.status("r1-a").ready, "not ready")


async def test_idle_interval_zero_keeps_checking_at_the_interval(
    monitor: HealthMonitor, server: ScriptedHttpServer
) -> None:
    server.behaviour = lambda path, n: 200
    track(monitor, server, readiness=fast("/ready", interval=0.02, timeout=0.02, idle_interval=0))
    await eventually(lambda: monitor.status("r1-a").ready, "ready")
    monitor.set_quiet("r1-a", True)
    counted = server.count("/ready")
    await eventually(lambda: server.count("/ready") >= counted + 5, "checks go on")
    monitor.set_quiet("nobody", True)  # an unknown instance is fine


def test_startup_checks_come_quickly_at_first_then_every_startup_interval() -> None:
    # An instance that listens 35 ms after it started is found ready at 40 ms, not at 70 ms
    # (doubling steps) or 100 ms (a fixed 0.1 s step). An instance that never turns ready is
    # checked for as long as it runs: the count grows without bound, the wait does not.
    assert [startup_delay(n, 0.1) for n in range(1, 21)] == [0.01] * 20
    assert [startup_delay(n, 0.1) for n in (21, 22, 1_025, 10**9)] == [0.1] * 4
    assert startup_delay(1, 0.005) == 0.005  # never slower than the cap
