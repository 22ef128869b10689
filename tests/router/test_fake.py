"""FakeRouter behaves like the real one where the controller can tell the difference."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import pytest

from kiln.errors import InvalidInput, RouterConfigRejected, RouterUnavailable
from kiln.model import AppKey, Peer, RouteEntry, TrafficPolicy
from kiln.router import FakeRouter, Router

WEB = AppKey("dev", "web")
API = AppKey("dev", "api")


async def test_fake_counts_a_reload_only_when_routes_change() -> None:
    fake = FakeRouter()
    router: Router = fake  # the fake satisfies the protocol
    await router.start()

    assert await router.apply_routes([RouteEntry(None, "/", WEB)]) is True
    assert await router.apply_routes([RouteEntry(None, "/", WEB)]) is False
    assert fake.reloads == 1


async def test_fake_rejects_what_the_renderer_rejects() -> None:
    fake = FakeRouter(running=True)

    with pytest.raises(InvalidInput, match="two routes"):
        await fake.apply_routes([RouteEntry(None, "/", WEB), RouteEntry(None, "/", API)])
    assert fake.routes == ()


async def test_fake_keeps_peers_without_reloading() -> None:
    fake = FakeRouter(running=True)
    peers = [Peer("r1-a", "127.0.0.1", 40001)]

    await fake.set_peers(WEB, peers)

    assert await fake.get_peers() == {WEB: peers}
    assert fake.reloads == 0
    assert fake.peer_pushes == [(WEB, tuple(peers))]


async def test_fake_can_be_down_or_reject_a_config() -> None:
    fake = FakeRouter(running=True)
    fake.reject_next_config = "nginx: [emerg] something"
    with pytest.raises(RouterConfigRejected):
        await fake.apply_routes([RouteEntry(None, "/", WEB)])
    assert fake.routes == ()

    fake.available = False
    assert not await fake.is_running()
    with pytest.raises(RouterUnavailable):
        await fake.set_peers(WEB, [])


async def test_fake_keeps_the_policy_and_routes_requests_like_the_balancer() -> None:
    fake = FakeRouter(running=True)
    peers = [
        Peer("r1-a", "127.0.0.1", 40001, release=1),
        Peer("r2-a", "127.0.0.1", 40002, release=2),
        Peer("r3-a", "127.0.0.1", 40003, release=3),
    ]
    policy = TrafficPolicy(shares=((1, 75), (2, 25)), canary=2, preview=3)

    await fake.set_peers(WEB, peers, policy)

    assert fake.policies == {WEB: policy}
    assert fake.policy_pushes == [(WEB, policy)]
    picks = Counter(fake.choose_release(WEB) for _ in range(100))
    assert picks == {1: 75, 2: 25}
    assert fake.choose_release(WEB, headers={"X-Kiln-Canary": "always"}) == 2
    assert {fake.choose_release(WEB, headers={"X-Kiln-Canary": "never"}) for _ in range(9)} == {1}
    assert fake.choose_release(WEB, canary_cookie="dev.web.2") == 2
    assert fake.choose_release(WEB, headers={"X-Kiln-Preview": "1"}) == 3
    assert fake.choose_release(WEB, preview_route=True) == 3

    await fake.set_peers(WEB, peers[:1], TrafficPolicy(shares=((1, 100),), canary=2))
    assert fake.choose_release(WEB, headers={"X-Kiln-Canary": "always"}) is None  # a 503
    assert fake.choose_release(WEB, preview_route=True) is None
    assert fake.choose_release(WEB, canary_cookie="dev.web.2") == 1  # sticky, not forced


async def test_fake_accepts_preview_routes_and_rejects_a_clash_with_a_normal_one() -> None:
    fake = FakeRouter(running=True)

    await fake.apply_routes([RouteEntry("preview.example.com", "/", WEB, preview=True)])
    with pytest.raises(InvalidInput, match="two routes"):
        await fake.apply_routes(
            [RouteEntry(None, "/", WEB), RouteEntry(None, "/", WEB, preview=True)]
        )


async def test_fake_in_flight_and_traffic_are_what_the_test_sets() -> None:
    fake = FakeRouter(running=True)
    fake.in_flight_counts = {WEB: {"r1-a": 2, "r1-b": 0}}
    fake.add_traffic(WEB, 2, requests=10, errors=1, latency_ms=30)
    fake.add_traffic(WEB, 2, requests=5, latency_ms=3)

    assert await fake.in_flight() == {WEB: {"r1-a": 2}}
    counters = (await fake.traffic())[WEB][2]
    assert (counters.requests, counters.errors) == (15, 1)
    assert dict(counters.latency_buckets)[5] == 5
    assert dict(counters.latency_buckets)[50] == 15
    assert counters.latency_buckets[-1] == (math.inf, 15)


async def test_fake_wait_exited_returns_when_it_crashes_and_start_brings_it_back() -> None:
    fake = FakeRouter(running=True)
    waiter = asyncio.create_task(fake.wait_exited())
    await asyncio.sleep(0)
    assert not waiter.done()

    fake.crash()

    await asyncio.wait_for(waiter, 5)
    assert not await fake.is_running()
    await fake.wait_exited()  # not running: at once
    await fake.start()
    assert fake.starts == 1
    assert await fake.is_running()


async def test_fake_refuses_hosts_and_can_hold_applies() -> None:
    fake = FakeRouter(running=True)
    fake.refused_hosts["bad.test"] = 'nginx: [emerg] unexpected "bad.test"'
    with pytest.raises(RouterConfigRejected, match=r"bad\.test"):
        await fake.apply_routes([RouteEntry("bad.test", "/", WEB)])
    assert fake.routes == () and fake.applies == 1 and fake.reloads == 0

    fake.hold_applies.clear()
    held = asyncio.create_task(fake.apply_routes([RouteEntry("ok.test", "/", WEB)]))
    await asyncio.sleep(0)
    assert not held.done() and fake.routes == ()
    fake.hold_applies.set()
    assert await held is True
    assert fake.applies == 2 and fake.reloads == 1


async def test_fake_checks_a_table_by_its_refusal_rules_and_changes_nothing() -> None:
    fake = FakeRouter(running=True)
    await fake.apply_routes([RouteEntry("ok.test", "/", WEB)])
    fake.refused_hosts["bad.test"] = 'nginx: [emerg] unexpected "bad.test"'
    served, reloads, applies = fake.routes, fake.reloads, fake.applies

    bad = [RouteEntry("ok.test", "/", WEB), RouteEntry("bad.test", "/", API)]
    assert await fake.check_routes(bad) == 'nginx: [emerg] unexpected "bad.test"'
    clash = [RouteEntry(None, "/", WEB), RouteEntry(None, "/", API)]
    assert "two routes" in (await fake.check_routes(clash) or "")
    assert await fake.check_routes([RouteEntry("new.test", "/", API), *served]) is None
    assert await fake.check_routes(served) is None  # what it serves: no `nginx -t` needed

    assert fake.checks == 2  # the two new tables the renderer let through
    assert (fake.routes, fake.reloads, fake.applies) == (served, reloads, applies)


async def test_fake_checks_need_no_running_nginx_but_a_reachable_one() -> None:
    fake = FakeRouter()  # not started: `nginx -t` still runs
    assert await fake.check_routes([RouteEntry(None, "/", WEB)]) is None

    fake.available = False
    with pytest.raises(RouterUnavailable):
        await fake.check_routes([RouteEntry(None, "/", WEB)])


async def test_fake_leaves_a_one_off_refusal_to_the_next_apply() -> None:
    fake = FakeRouter(running=True)
    fake.reject_next_config = "nginx: [emerg] bind() failed"

    assert await fake.check_routes([RouteEntry(None, "/", WEB)]) is None
    with pytest.raises(RouterConfigRejected, match="bind"):
        await fake.apply_routes([RouteEntry(None, "/", WEB)])
