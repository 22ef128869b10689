"""Traffic between releases: exact shares, a canary testers can force or avoid and clients stick
to, a preview reachable by header or by its own route, and 503 rather than another release."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import httpx
import pytest

from kiln.model import AppKey, Peer, RouteEntry, TrafficPolicy
from kiln.router.nginx import NginxRouter

from .conftest import Backends
from .support import Answer, count_answers, fetch, peer

pytestmark = pytest.mark.integration

WEB = AppKey("dev", "web")


async def get(router: NginxRouter, path: str = "/", **headers: str) -> Answer:
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    return await asyncio.to_thread(fetch, router.listen_port, path, headers=sent)


async def two_releases(router: NginxRouter, backends: Backends, policy: TrafficPolicy) -> None:
    """Release 1: stable-a and stable-b; release 2: canary. Route / → dev/web."""
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(
        WEB,
        [
            peer("stable-a", backends.start("stable-a"), release=1),
            peer("stable-b", backends.start("stable-b"), release=1),
            peer("canary", backends.start("canary"), release=2),
        ],
        policy,
    )


def by_release(answers: Counter[str]) -> Counter[str]:
    merged: Counter[str] = Counter()
    for body, n in answers.items():
        merged["stable" if body.startswith("stable") else body] += n
    return merged


async def test_shares_split_2000_requests_75_to_25_between_releases(
    router: NginxRouter, backends: Backends
) -> None:
    await two_releases(router, backends, TrafficPolicy(shares=((1, 75), (2, 25))))

    # Four keep-alive connections, which NGINX may spread over its workers.
    parts = await asyncio.gather(
        *(asyncio.to_thread(count_answers, router.listen_port, 500) for _ in range(4))
    )
    seen = by_release(sum(parts, Counter()))

    assert sum(seen.values()) == 2000
    assert abs(seen["canary"] - 500) <= 100  # 25 % ± 5 points
    assert abs(seen["stable"] - 1500) <= 100


async def test_a_release_with_share_0_gets_no_requests(
    router: NginxRouter, backends: Backends
) -> None:
    await two_releases(router, backends, TrafficPolicy(shares=((1, 100), (2, 0))))

    seen = await asyncio.to_thread(count_answers, router.listen_port, 200)

    assert set(seen) == {"stable-a", "stable-b"}
    assert sum(seen.values()) == 200


async def test_without_shares_every_peer_is_one_pool_by_weight(
    router: NginxRouter, backends: Backends
) -> None:
    await two_releases(router, backends, TrafficPolicy())

    seen = await asyncio.to_thread(count_answers, router.listen_port, 300)

    assert seen == {"stable-a": 100, "stable-b": 100, "canary": 100}


async def test_canary_header_forces_the_canary_or_keeps_a_request_off_it(
    router: NginxRouter, backends: Backends
) -> None:
    await two_releases(router, backends, TrafficPolicy(shares=((1, 50), (2, 50)), canary=2))

    always = [await get(router, X_Kiln_Canary="always") for _ in range(10)]
    never = [await get(router, X_Kiln_Canary="never") for _ in range(10)]

    assert {a.body for a in always} == {"canary"}
    assert {a.body for a in never} == {"stable-a", "stable-b"}


async def test_a_client_that_got_the_canary_keeps_it_through_its_cookie(
    router: NginxRouter, backends: Backends
) -> None:
    await two_releases(router, backends, TrafficPolicy(shares=((1, 100), (2, 0)), canary=2))

    first = await get(router, X_Kiln_Canary="always")
    assert first.body == "canary"
    cookie = first.headers["Set-Cookie"].split(";")[0]
    assert cookie == "kiln_canary=dev.web.2"
    assert "Path=/" in first.headers["Set-Cookie"]

    # Share 0, no header: only the cookie brings these to the canary.
    later = [await get(router, Cookie=cookie) for _ in range(10)]
    assert {a.body for a in later} == {"canary"}
    assert all("Set-Cookie" not in a.headers for a in later)  # already has it
    assert (await get(router)).body.startswith("stable")
    assert "Set-Cookie" not in (await get(router)).headers


async def test_a_stale_canary_cookie_is_ignored(router: NginxRouter, backends: Backends) -> None:
    await two_releases(router, backends, TrafficPolicy(shares=((1, 100), (2, 0)), canary=2))
    cookie = "kiln_canary=dev.web.2"
    assert (await get(router, Cookie=cookie)).body == "canary"

    # The canary moved on (release 3 now); release 2 is just a release with share 0.
    await router.set_peers(
        WEB,
        [
            peer("stable-a", backends["stable-a"].port, release=1),
            peer("canary", backends["canary"].port, release=2),
            peer("next", backends.start("next"), release=3),
        ],
        TrafficPolicy(shares=((1, 100),), canary=3),
    )

    assert {(await get(router, Cookie=cookie)).body for _ in range(5)} == {"stable-a"}
    assert (await get(router, Cookie="kiln_canary=dev.other.3")).body == "stable-a"
    assert (await get(router, Cookie="kiln_canary=dev.web.3")).body == "next"


async def test_preview_header_reaches_the_preview_release_even_with_share_0(
    router: NginxRouter, backends: Backends
) -> None:
    await two_releases(router, backends, TrafficPolicy(shares=((1, 100),), preview=2))

    assert {(await get(router, X_Kiln_Preview="1")).body for _ in range(5)} == {"canary"}
    seen = await asyncio.to_thread(count_answers, router.listen_port, 50)
    assert "canary" not in seen


async def test_a_preview_route_always_reaches_the_preview_release(
    router: NginxRouter, backends: Backends
) -> None:
    await two_releases(router, backends, TrafficPolicy(shares=((1, 100),), preview=2))
    await router.apply_routes(
        [RouteEntry(None, "/", WEB), RouteEntry("preview.example.com", "/", WEB, preview=True)]
    )

    answers = [
        await asyncio.to_thread(fetch, router.listen_port, "/x", host="preview.example.com")
        for _ in range(5)
    ]
    assert {a.body for a in answers} == {"canary"}
    assert (await get(router, "/x")).body.startswith("stable")

    await router.set_peers(WEB, [peer("stable-a", backends["stable-a"].port, release=1)])
    none = await asyncio.to_thread(fetch, router.listen_port, "/x", host="preview.example.com")
    assert (none.status, none.body) == (503, "dev/web has no preview release\n")


@pytest.mark.parametrize(
    ("headers", "policy", "message"),
    [
        (
            {"X-Kiln-Canary": "always"},
            TrafficPolicy(shares=((1, 100),), canary=2),
            "release 2 of dev/web (the canary) has no ready instance\n",
        ),
        (
            {"X-Kiln-Preview": "1"},
            TrafficPolicy(shares=((1, 100),), preview=2),
            "release 2 of dev/web (the preview) has no ready instance\n",
        ),
        ({"X-Kiln-Canary": "always"}, TrafficPolicy(), "dev/web has no canary release\n"),
        ({"X-Kiln-Preview": "1"}, TrafficPolicy(), "dev/web has no preview release\n"),
    ],
)
async def test_a_forced_release_that_cannot_serve_answers_503_never_another_release(
    router: NginxRouter,
    backends: Backends,
    headers: dict[str, str],
    policy: TrafficPolicy,
    message: str,
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    # Release 2 has a peer, but with weight 0 it takes no new requests.
    await router.set_peers(
        WEB,
        [
            peer("stable", backends.start("stable"), release=1),
            peer("leaving", backends.start("leaving"), weight=0, release=2),
        ],
        policy,
    )

    answer = await asyncio.to_thread(fetch, router.listen_port, "/", headers=headers)

    assert (answer.status, answer.body) == (503, message)


async def test_never_the_canary_when_only_the_canary_has_a_share_answers_503(
    router: NginxRouter, backends: Backends
) -> None:
    await two_releases(router, backends, TrafficPolicy(shares=((1, 0), (2, 100)), canary=2))

    answer = await get(router, X_Kiln_Canary="never")

    assert (answer.status, answer.body) == (503, "only the canary release 2 serves dev/web\n")
    assert (await get(router)).body == "canary"


async def test_peers_and_policy_round_trip_and_survive_a_restart(
    router: NginxRouter, backends: Backends
) -> None:
    peers = [
        Peer("r1-a", "127.0.0.1", backends.start("a"), 1, release=1),
        Peer("r2-a", "127.0.0.1", backends.start("b"), 2, release=2),
    ]
    policy = TrafficPolicy(shares=((1, 90), (2, 10)), canary=2, preview=None)
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(WEB, peers, policy)

    assert await router.get_peers() == {WEB: peers}
    assert await router.get_policies() == {WEB: policy}

    await router.stop()
    await router.start()

    assert await router.get_peers() == {WEB: peers}
    assert await router.get_policies() == {WEB: policy}
    assert (await get(router, X_Kiln_Canary="always")).body == "b"


async def test_a_peers_file_written_before_releases_still_loads(
    router: NginxRouter, backends: Backends
) -> None:
    port = backends.start("blue")
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.stop()
    old_format = {"dev/web": [{"id": "blue", "host": "127.0.0.1", "port": port, "weight": 1}]}
    router.peers_file.write_text(json.dumps(old_format))

    fresh = NginxRouter(
        prefix=router.prefix,
        listen_host=router.listen_host,
        listen_port=router.listen_port,
        run_dir=router.run_dir,
    )
    await fresh.start()
    try:
        assert await fresh.get_peers() == {WEB: [peer("blue", port)]}
        assert (await get(fresh)).body == "blue"
    finally:
        await fresh.close()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"peers": [], "policy": {"shares": [[1, 60], [2, 30]]}}', "add up to 100"),
        ('{"peers": [], "policy": {"shares": [[1, 50], [1, 50]]}}', "twice"),
        ('{"peers": [], "policy": {"canary": 0}}', "canary"),
        ('{"peers": [], "policy": {"preview": "2"}}', "preview"),
        ('{"peers": [{"id": "a", "host": "127.0.0.1", "port": 80, "release": -1}]}', "release"),
    ],
)
async def test_admin_endpoint_answers_400_to_a_bad_policy(
    router: NginxRouter, body: str, message: str
) -> None:
    transport = httpx.AsyncHTTPTransport(uds=str(router.admin_socket))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        response = await client.put("/peers/dev/web", content=body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert await router.get_peers() == {}
