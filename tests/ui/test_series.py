"""Per-release chart points from cumulative router counters (pure)."""

from __future__ import annotations

import math

from kiln.api.ui.series import TrafficHistory, Usage, UsageHistory
from kiln.model import AppKey, ReleaseTraffic

WEB = AppKey("dev", "web")
BOUNDS = (10.0, 50.0, 250.0, math.inf)


def counters(requests: int, errors: int, slow: int = 0) -> ReleaseTraffic:
    """``requests`` of which ``slow`` took 50-250 ms and the rest under 10 ms."""
    fast = requests - slow
    buckets = (fast, fast, requests, requests)
    return ReleaseTraffic(
        requests=requests, errors=errors, latency_buckets=tuple(zip(BOUNDS, buckets, strict=True))
    )


def test_a_canary_gets_its_own_line_next_to_stables():
    history = TrafficHistory()
    history.add(WEB, 100.0, {1: counters(0, 0)})
    history.add(WEB, 102.0, {1: counters(100, 0), 2: counters(20, 4, slow=20)})
    series = history.series(WEB).as_json()
    assert series["t"] == [102.0]
    stable, canary = series["releases"]["1"], series["releases"]["2"]
    assert stable["rate"] == [50.0]
    assert stable["error_rate"] == [0.0]
    assert stable["p95_ms"] == [10.0]
    assert canary["rate"] == [10.0]
    assert canary["error_rate"] == [0.2]
    assert canary["p95_ms"] == [250.0]


def test_a_counter_that_went_down_is_a_new_start_not_a_negative_rate():
    history = TrafficHistory()
    history.add(WEB, 0.0, {1: counters(500, 5)})
    history.add(WEB, 1.0, {1: counters(30, 0)})  # NGINX restarted
    assert history.series(WEB).as_json()["releases"]["1"]["rate"] == [30.0]


def test_samples_closer_than_the_interval_are_not_taken_and_old_ones_are_let_go():
    history = TrafficHistory(keep=10.0, min_interval=1.0)
    history.add(WEB, 0.0, {1: counters(0, 0)})
    history.add(WEB, 0.5, {1: counters(99, 0)})
    assert history.series(WEB).times == []
    for second in range(1, 30):
        history.add(WEB, float(second), {1: counters(second * 10, 0)})
    series = history.series(WEB)
    assert series.times[0] >= 19.0
    assert history.rate(WEB) == 10.0


def test_an_app_no_longer_counted_is_forgotten_once_its_samples_are_past_keeping():
    api = AppKey("dev", "api")
    history = TrafficHistory(keep=10.0, min_interval=1.0)
    history.add(WEB, 0.0, {1: counters(0, 0)})
    history.add(api, 0.0, {1: counters(0, 0)})
    for second in range(1, 12):  # web is destroyed: NGINX counts api only
        history.add(api, float(second), {1: counters(second, 0)})
        history.prune(float(second))
    assert history.keys() == [api]
    assert history.series(WEB).times == []


def test_a_p95_beyond_the_largest_bound_shows_that_bound():
    history = TrafficHistory()
    slow = ReleaseTraffic(
        requests=10, errors=0, latency_buckets=tuple(zip(BOUNDS, (0, 0, 0, 10), strict=True))
    )
    history.add(WEB, 0.0, {})
    history.add(WEB, 1.0, {1: slow})
    assert history.series(WEB).as_json()["releases"]["1"]["p95_ms"] == [250.0]


def test_cpu_is_the_time_used_over_the_span_and_memory_the_last_reading():
    usage = UsageHistory(span=15.0, min_span=4.0)
    usage.add(0.0, {"c1": (10.0, 50 << 20)})
    assert usage.usage("c1") == Usage(cpu_percent=None, memory_bytes=50 << 20)  # too early
    usage.add(5.0, {"c1": (12.5, 60 << 20)})
    assert usage.usage("c1") == Usage(cpu_percent=50.0, memory_bytes=60 << 20)
    usage.add(6.0, {})  # the instance is gone
    assert usage.usage("c1") is None
