"""Weights split traffic exactly; weight 0 gets nothing; a dead peer costs GET clients nothing."""

from __future__ import annotations

import asyncio

import pytest

from kiln.model import AppKey, RouteEntry
from kiln.router.nginx import NginxRouter

from .backends import free_port
from .conftest import Backends
from .support import count_answers, peer

pytestmark = pytest.mark.integration

WEB = AppKey("dev", "web")


async def test_weights_3_to_1_split_2000_requests_75_to_25(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(
        WEB, [peer("blue", backends.start("blue"), 3), peer("green", backends.start("green"), 1)]
    )

    seen = await asyncio.to_thread(count_answers, router.listen_port, 2000)

    assert sum(seen.values()) == 2000
    # Smooth weighted round robin is exact per worker; across workers at most ±1 each.
    assert abs(seen["blue"] - 1500) <= 20
    assert abs(seen["green"] - 500) <= 20


async def test_a_peer_with_weight_0_gets_no_requests(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(
        WEB, [peer("blue", backends.start("blue"), 1), peer("old", backends.start("old"), 0)]
    )

    seen = await asyncio.to_thread(count_answers, router.listen_port, 200)

    assert seen == {"blue": 200}


async def test_only_weight_0_peers_means_no_ready_instance(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(WEB, [peer("old", backends.start("old"), 0)])

    seen = await asyncio.to_thread(count_answers, router.listen_port, 5)

    assert seen == {"status 503": 5}


async def test_a_dead_peer_next_to_a_live_one_causes_no_client_errors(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(WEB, [peer("blue", backends.start("blue")), peer("dead", free_port())])

    seen = await asyncio.to_thread(count_answers, router.listen_port, 200)

    assert seen == {"blue": 200}


async def test_a_peer_that_dies_while_serving_causes_no_client_errors(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(
        WEB, [peer("blue", backends.start("blue")), peer("green", backends.start("green"))]
    )
    warm = await asyncio.to_thread(count_answers, router.listen_port, 100)
    assert warm == {"blue": 50, "green": 50}

    backends.stop("green")  # also cuts NGINX's idle keep-alive connections to it
    seen = await asyncio.to_thread(count_answers, router.listen_port, 200)

    assert seen == {"blue": 200}
