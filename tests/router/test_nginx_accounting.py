"""What NGINX counts for the controller: requests in flight per instance (drain), requests, 5xx
answers and latency per release (canary analysis), and the release and instance in the log."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import math
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kiln.model import AppKey, ReleaseTraffic, RouteEntry, TrafficPolicy
from kiln.router.nginx import NginxRouter

from .backends import free_port
from .conftest import Backends
from .support import Answer, count_answers, fetch, peer

pytestmark = pytest.mark.integration

WEB = AppKey("dev", "web")
API = AppKey("dev", "api")


async def eventually(
    check: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while (seen := await check()) != expected:
        assert time.monotonic() < deadline, f"still {seen!r}, waiting for {expected!r}"
        await asyncio.sleep(0.02)


async def test_in_flight_counts_rise_with_slow_requests_and_fall_when_they_end(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(
        WEB, [peer("blue", backends.start("blue"), 2), peer("green", backends.start("green"), 1)]
    )
    assert await router.in_flight() == {}

    held = [
        asyncio.create_task(asyncio.to_thread(fetch, router.listen_port, "/?hold=1"))
        for _ in range(6)
    ]

    async def serving() -> dict[str, int]:
        busy = {name: backends[name].in_progress() for name in ("blue", "green")}
        return {name: n for name, n in busy.items() if n}

    try:
        await eventually(lambda: _sum(serving()), 6)
        counts = await router.in_flight()
        assert counts == {WEB: await serving()}
    finally:
        backends["blue"].release_held()
        backends["green"].release_held()
        answers: list[Answer] = await asyncio.gather(*held)

    assert {a.status for a in answers} == {200}
    await eventually(router.in_flight, {})


async def _sum(counts: Awaitable[dict[str, int]]) -> int:
    return sum((await counts).values())


async def test_a_try_on_a_dead_peer_is_not_left_in_flight(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(WEB, [peer("dead", free_port()), peer("blue", backends.start("blue"))])

    seen = await asyncio.to_thread(count_answers, router.listen_port, 20)

    assert seen == {"blue": 20}
    assert await router.in_flight() == {}


async def test_counters_per_release_count_requests_5xx_and_latency(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(
        WEB,
        [
            peer("stable", backends.start("stable"), release=1),
            peer("canary", backends.start("canary"), release=2),
        ],
        TrafficPolicy(shares=((1, 50), (2, 50))),
    )

    # The canary fails every request and is slow about it.
    seen = await asyncio.to_thread(
        count_answers, router.listen_port, 40, "/?status.canary=500&sleep.canary=0.03"
    )
    assert seen == {"stable": 20, "status 500": 20}

    traffic = (await router.traffic())[WEB]
    assert set(traffic) == {1, 2}
    assert (traffic[1].requests, traffic[1].errors) == (20, 0)
    assert (traffic[2].requests, traffic[2].errors) == (20, 20)
    for counters in traffic.values():
        bounds = [bound for bound, _ in counters.latency_buckets]
        assert bounds == [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, math.inf]
        counts = [n for _, n in counters.latency_buckets]
        assert counts == sorted(counts)  # cumulative
        assert counts[-1] == counters.requests
    # 30 ms of sleep can never be counted at or under 25 ms.
    assert dict(traffic[2].latency_buckets)[25] == 0


async def test_nginx_own_502_counts_against_the_release_that_failed(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(
        WEB,
        [peer("stable", backends.start("stable"), release=1), peer("dead", free_port(), release=2)],
        TrafficPolicy(shares=((1, 50), (2, 50)), canary=2),
    )

    forced = await asyncio.to_thread(
        fetch, router.listen_port, "/", headers={"X-Kiln-Canary": "always"}
    )
    # Unforced requests the canary could not take go on to the stable release.
    seen = await asyncio.to_thread(count_answers, router.listen_port, 10)

    assert forced.status == 502
    assert seen == {"stable": 10}
    traffic = (await router.traffic())[WEB]
    assert traffic[2] == ReleaseTraffic(
        requests=6, errors=6, latency_buckets=traffic[2].latency_buckets
    )
    assert (traffic[1].requests, traffic[1].errors) == (10, 0)


async def test_one_traffic_call_answers_for_every_app_and_forgetting_an_app_drops_its_counters(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB), RouteEntry(None, "/api/", API)])
    await router.set_peers(WEB, [peer("web", backends.start("web"), release=3)])
    await router.set_peers(API, [peer("api", backends.start("api"), release=7)])
    await asyncio.to_thread(count_answers, router.listen_port, 3, "/")
    await asyncio.to_thread(count_answers, router.listen_port, 2, "/api/x")
    await router.forget_peers(API)
    await asyncio.to_thread(count_answers, router.listen_port, 1, "/api/x")  # 503, release 0

    traffic = await router.traffic()

    assert {key: {r: t.requests for r, t in v.items()} for key, v in traffic.items()} == {
        WEB: {3: 3},
        API: {0: 1},
    }
    assert traffic[API][0].errors == 1
    # Nothing kept in kiln's memory for the forgotten app (its per-app lock included).
    assert API not in router._app_locks and API not in await router.get_peers()


async def test_access_log_names_the_release_and_instance_that_answered(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    port = backends.start("blue")
    await router.set_peers(WEB, [peer("r4-blue", port, release=4)])

    await asyncio.to_thread(fetch, router.listen_port, "/logged")

    entry = await access_log_entry(router, "/logged")
    assert entry["release"] == 4
    assert entry["instance"] == "r4-blue"
    assert entry["upstream_addr"] == f"127.0.0.1:{port}"
    assert entry["upstream"] == "dev/web"

    await router.set_peers(WEB, [])
    await asyncio.to_thread(fetch, router.listen_port, "/refused")
    entry = await access_log_entry(router, "/refused")
    assert (entry["status"], entry["release"], entry["instance"]) == (503, 0, "")


async def access_log_entry(router: NginxRouter, uri: str) -> dict[str, Any]:
    # The log is buffered (flushed every second or when a line follows): wait, bounded.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in router.access_log.read_text().splitlines():
            entry: dict[str, Any] = json.loads(line)
            if entry["uri"] == uri:
                return entry
        await asyncio.to_thread(fetch, router.listen_port, "/nudge")
        await asyncio.sleep(0.1)
    raise AssertionError(f"no access log line for {uri}")


async def test_requests_of_a_worker_that_died_do_not_stay_in_flight(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(WEB, [peer("blue", backends.start("blue"))])
    held = asyncio.create_task(asyncio.to_thread(fetch, router.listen_port, "/?hold=1"))
    try:
        await eventually(router.in_flight, {WEB: {"blue": 1}})
        workers = router.worker_pids()
        for pid in workers:
            os.kill(pid, signal.SIGKILL)  # the master starts new ones

        await eventually(lambda: _new_workers(router, workers), True)
        assert await router.in_flight() == {}
    finally:
        backends["blue"].release_held()
        with contextlib.suppress(OSError, http.client.HTTPException):
            await held


async def _new_workers(router: NginxRouter, old: set[int]) -> bool:
    now = router.worker_pids()
    return bool(now) and now.isdisjoint(old)
