"""NGINX sends a request to a second app only when that cannot do harm: the method is idempotent
and the first app never answered. A request in flight when its peer leaves the list finishes
there."""

from __future__ import annotations

import asyncio
import time

import pytest

from kiln.model import AppKey, RouteEntry
from kiln.router.nginx import NginxRouter

from .backends import free_port
from .conftest import Backends
from .support import fetch, peer

pytestmark = pytest.mark.integration

WEB = AppKey("dev", "web")


async def two_peers(router: NginxRouter, backends: Backends) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(
        WEB, [peer("blue", backends.start("blue")), peer("green", backends.start("green"))]
    )


def received(backends: Backends, name: str, request: str) -> int:
    return backends[name].requests[request]


async def wait_until_serving(backends: Backends, name: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while backends[name].in_progress() < count:
        assert time.monotonic() < deadline, f"{name} never got {count} requests"
        await asyncio.sleep(0.01)


async def test_a_post_in_flight_on_a_peer_that_leaves_finishes_there(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(WEB, [peer("blue", backends.start("blue"))])
    green = backends.start("green")

    post = asyncio.create_task(
        asyncio.to_thread(fetch, router.listen_port, "/?hold=1", method="POST", body=b"order=1")
    )
    try:
        await wait_until_serving(backends, "blue", 1)
        assert await router.in_flight() == {WEB: {"blue": 1}}
        await router.set_peers(WEB, [peer("green", green)])  # blue leaves; it drains
        assert await router.in_flight() == {WEB: {"blue": 1}}
    finally:
        backends["blue"].release_held()
        answer = await post

    assert (answer.status, answer.body) == (200, "blue")
    assert received(backends, "blue", "POST /") == 1
    assert received(backends, "green", "POST /") == 0
    assert await router.in_flight() == {}
    assert (await asyncio.to_thread(fetch, router.listen_port, "/")).body == "green"


async def test_a_post_whose_app_closed_without_answering_is_not_replayed(
    router: NginxRouter, backends: Backends
) -> None:
    await two_peers(router, backends)

    answers = [
        await asyncio.to_thread(fetch, router.listen_port, "/?close=1", method="POST", body=b"x")
        for _ in range(4)
    ]

    assert {a.status for a in answers} == {502}
    assert received(backends, "blue", "POST /") + received(backends, "green", "POST /") == 4


async def test_a_post_that_never_reached_an_app_goes_to_another_peer(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(WEB, [peer("dead", free_port()), peer("blue", backends.start("blue"))])

    answers = [
        await asyncio.to_thread(fetch, router.listen_port, "/", method="POST", body=b"x")
        for _ in range(4)
    ]

    assert {(a.status, a.body) for a in answers} == {(200, "blue")}
    assert received(backends, "blue", "POST /") == 4


async def test_a_get_whose_app_died_without_answering_is_retried_on_another_peer(
    router: NginxRouter, backends: Backends
) -> None:
    await two_peers(router, backends)

    answers = [
        await asyncio.to_thread(fetch, router.listen_port, "/?close.blue=1") for _ in range(6)
    ]

    assert {(a.status, a.body) for a in answers} == {(200, "green")}
    assert received(backends, "green", "GET /") == 6
    assert received(backends, "blue", "GET /") >= 1  # those were retried on green


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_a_get_that_got_an_answer_is_never_replayed(
    router: NginxRouter, backends: Backends, status: int
) -> None:
    await two_peers(router, backends)

    answers = [
        await asyncio.to_thread(fetch, router.listen_port, f"/?status.blue={status}")
        for _ in range(6)
    ]

    failed = sum(1 for a in answers if a.status == status)
    assert failed >= 1
    assert received(backends, "blue", "GET /") == failed
    assert received(backends, "green", "GET /") == 6 - failed


async def test_the_rendered_retry_rules_never_replay_a_sent_post_or_an_answer(
    router: NginxRouter,
) -> None:
    directives = [
        line.strip()
        for line in router.conf_path.read_text().splitlines()
        if line.strip().startswith("proxy_next_upstream")
    ]

    # No http_5xx (an answer is final), no non_idempotent (a sent POST is never sent again).
    assert directives == [
        "proxy_next_upstream error timeout;",
        "proxy_next_upstream_tries 3;",
        "proxy_next_upstream_timeout 10s;",
    ]
