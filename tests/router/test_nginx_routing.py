"""Requests through a private NGINX reach the peers of the app their host and path route to."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from kiln.errors import InvalidInput
from kiln.model import AppKey, Peer, RouteEntry
from kiln.router.nginx import NginxRouter

from .conftest import Backends
from .support import fetch, peer

pytestmark = pytest.mark.integration

WEB = AppKey("dev", "web")
API = AppKey("dev", "api")
SHOP = AppKey("dev", "shop")


async def get(router: NginxRouter, path: str = "/", host: str | None = None) -> tuple[int, str]:
    answer = await asyncio.to_thread(fetch, router.listen_port, path, host=host)
    return answer.status, answer.body


async def test_requests_reach_the_peer_set_for_the_routes_app(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(WEB, [peer("blue", backends.start("blue"))])

    assert await get(router, "/anything") == (200, "blue")


async def test_host_and_longest_path_prefix_pick_the_app(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes(
        [
            RouteEntry(None, "/", WEB),
            RouteEntry(None, "/api/", API),
            RouteEntry("shop.example.com", "/", SHOP),
        ]
    )
    for key, name in ((WEB, "web"), (API, "api"), (SHOP, "shop")):
        await router.set_peers(key, [peer(name, backends.start(name))])

    assert await get(router, "/") == (200, "web")
    assert await get(router, "/api/users") == (200, "api")
    assert await get(router, "/apix") == (200, "web")
    assert await get(router, "/", host="shop.example.com") == (200, "shop")
    assert await get(router, "/", host="shop.example.com:8080") == (200, "shop")
    # Host-less routes also serve named hosts for paths the host has no route for.
    assert await get(router, "/api/x", host="shop.example.com") == (200, "api")
    assert await get(router, "/", host="other.example.com") == (200, "web")


async def test_unmatched_host_and_path_get_a_404_saying_so(router: NginxRouter) -> None:
    await router.apply_routes([RouteEntry("a.example.com", "/app/", WEB)])

    status, body = await get(router, "/elsewhere", host="a.example.com")
    assert status == 404
    assert body == "no app serves a.example.com/elsewhere\n"
    status, body = await get(router, "/app/", host="b.example.com")
    assert (status, body) == (404, "no app serves b.example.com/app/\n")


async def test_an_app_without_ready_peers_answers_503_naming_it(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    assert await get(router) == (503, "no ready instance of dev/web\n")  # never set

    await router.set_peers(WEB, [peer("blue", backends.start("blue"))])
    assert await get(router) == (200, "blue")

    await router.set_peers(WEB, [])
    assert await get(router) == (503, "no ready instance of dev/web\n")


async def test_upstream_sees_the_clients_host_and_forwarding_headers(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(WEB, [peer("blue", backends.start("blue"))])

    answer = await asyncio.to_thread(fetch, router.listen_port, "/", host="web.example.com:81")
    assert answer.headers["X-Seen-Host"] == "web.example.com:81"
    assert answer.headers["X-Seen-Forwarded-For"] == "127.0.0.1"
    assert answer.headers["X-Seen-Forwarded-Proto"] == "http"


async def test_get_peers_returns_what_was_set(router: NginxRouter, backends: Backends) -> None:
    peers = [Peer("r1-a", "127.0.0.1", 40001, 3), Peer("r1-b", "127.0.0.1", 40002, 0)]
    await router.set_peers(WEB, peers)
    await router.set_peers(API, [])

    assert await router.get_peers() == {WEB: peers, API: []}


async def test_a_peer_with_a_host_name_is_refused_before_anything_changes(
    router: NginxRouter, backends: Backends
) -> None:
    good = [peer("blue", backends.start("blue"))]
    await router.set_peers(WEB, good)
    peers_file_before = router.peers_file.read_text()

    with pytest.raises(InvalidInput, match="not an IP address"):
        await router.set_peers(WEB, [Peer("bad", "localhost", 8080)])

    assert await router.get_peers() == {WEB: good}
    assert router.peers_file.read_text() == peers_file_before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"id": "a"}', "JSON list"),
        ("[{]", "not JSON"),
        ('[{"id": "a", "host": "example.com", "port": 80}]', "IP address"),
        ('[{"id": "a", "host": "127.0.0.1", "port": 0}]', "port"),
        ('[{"id": "a", "host": "127.0.0.1", "port": 80, "weight": -1}]', "weight"),
        ('[{"id": "a", "host": "127.0.0.1", "port": 80, "weight": 1.5}]', "weight"),
        ('[{"host": "127.0.0.1", "port": 80}]', "id"),
        (
            '[{"id": "a", "host": "127.0.0.1", "port": 80}, {"id": "a", "host": "::1", "port": 81}]',
            "twice",
        ),
    ],
)
async def test_admin_endpoint_answers_400_to_a_bad_peer_list(
    router: NginxRouter, body: str, message: str
) -> None:
    transport = httpx.AsyncHTTPTransport(uds=str(router.admin_socket))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        response = await client.put("/peers/dev/web", content=body)
        assert response.status_code == 400
        assert message in response.json()["error"]
        assert (await client.get("/peers")).json() == {}


async def test_access_log_is_json_with_the_app_and_upstream(
    router: NginxRouter, backends: Backends
) -> None:
    import json

    await router.apply_routes([RouteEntry(None, "/", WEB)])
    port = backends.start("blue")
    await router.set_peers(WEB, [peer("blue", port)])
    await get(router, "/logged")

    # The log is buffered (flushed every second): wait for the line, bounded.
    deadline = asyncio.get_running_loop().time() + 10
    entry = None
    while entry is None and asyncio.get_running_loop().time() < deadline:
        lines = [json.loads(line) for line in router.access_log.read_text().splitlines()]
        entry = next((e for e in lines if e["uri"] == "/logged"), None)
        if entry is None:
            await get(router, "/nudge")  # NGINX flushes a buffer when it writes the next line
            await asyncio.sleep(0.1)
    assert entry is not None, "no access log line for /logged"
    assert entry["upstream"] == "dev/web"
    assert entry["upstream_addr"] == f"127.0.0.1:{port}"
    assert entry["status"] == 200
    assert isinstance(entry["request_time"], float)


async def test_a_removed_route_is_gone_when_apply_returns_and_needs_no_second_check(
    router: NginxRouter, backends: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[str] = []
    check = router._check_config

    async def counted(path: Path) -> str | None:
        checks.append(path.name)
        return await check(path)

    monkeypatch.setattr(router, "_check_config", counted)
    both = [RouteEntry("web.test", "/", WEB), RouteEntry("shop.test", "/", SHOP)]
    await router.apply_routes(both)
    for key, name in ((WEB, "web"), (SHOP, "shop")):
        await router.set_peers(key, [peer(name, backends.start(name))])
    assert await get(router, "/", host="shop.test") == (200, "shop")
    assert len(checks) == 1

    # A table within one NGINX already accepted: no `nginx -t`, live at return all the same.
    assert await router.apply_routes(both[:1]) is True
    assert (await get(router, "/", host="shop.test"))[0] == 404
    assert await get(router, "/", host="web.test") == (200, "web")
    assert await router.apply_routes(both) is True  # back: still within
    assert await get(router, "/", host="shop.test") == (200, "shop")
    assert len(checks) == 1

    await router.apply_routes([*both, RouteEntry("new.test", "/", WEB)])  # something new
    assert len(checks) == 2
