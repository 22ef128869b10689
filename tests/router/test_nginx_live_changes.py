"""Peers change live without a reload; routes change by a checked reload."""

from __future__ import annotations

import asyncio
import time

import pytest

from kiln.errors import RouterConfigRejected
from kiln.model import AppKey, RouteEntry
from kiln.router import nginx as nginx_module
from kiln.router.nginx import NginxRouter

from .conftest import Backends
from .support import KeepAliveLoad, fetch, peer

pytestmark = pytest.mark.integration

WEB = AppKey("dev", "web")
API = AppKey("dev", "api")


async def wait_for_requests(load: KeepAliveLoad, total: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while load.total() < total:
        assert time.monotonic() < deadline, f"only {load.total()} of {total} requests sent"
        await asyncio.sleep(0.01)


async def test_peer_changes_under_keepalive_load_fail_nothing_and_do_not_reload(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    ports = {name: backends.start(name) for name in ("blue", "green", "red")}
    await router.set_peers(WEB, [peer("blue", ports["blue"])])
    workers_before = router.worker_pids()
    generation_before = (await router.status()).generation

    load = KeepAliveLoad(router.listen_port, connections=4)
    load.start()
    try:
        changes = [
            [peer("blue", ports["blue"]), peer("green", ports["green"])],
            [peer("green", ports["green"], 9), peer("blue", ports["blue"], 1)],
            [peer("red", ports["red"])],
            [peer("blue", ports["blue"]), peer("red", ports["red"], 0)],
        ]
        for peers in changes:
            target = load.total() + 200
            await router.set_peers(WEB, peers)
            # Let the clients send a good number of requests on the new list.
            await wait_for_requests(load, target)
    finally:
        await asyncio.to_thread(load.stop)

    assert load.failures == 0
    assert load.reconnects == 0
    assert {"blue", "green", "red"} <= set(load.answers)
    assert router.worker_pids() == workers_before
    assert (await router.status()).generation == generation_before


async def test_applying_the_same_routes_again_does_not_reload(router: NginxRouter) -> None:
    routes = [RouteEntry(None, "/", WEB)]
    assert await router.apply_routes(routes) is True
    workers = router.worker_pids()

    assert await router.apply_routes(list(reversed(routes))) is False
    assert router.worker_pids() == workers


async def test_new_routes_are_live_when_apply_routes_returns(
    router: NginxRouter, backends: Backends
) -> None:
    await router.set_peers(API, [peer("api", backends.start("api"))])
    workers = router.worker_pids()

    assert await router.apply_routes([RouteEntry(None, "/api/", API)]) is True

    assert fetch(router.listen_port, "/api/x").body == "api"
    assert router.worker_pids().isdisjoint(workers)


async def test_a_config_nginx_rejects_keeps_the_old_one_serving(
    router: NginxRouter, backends: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(WEB, [peer("blue", backends.start("blue"))])
    good_config = router.conf_path.read_text()
    workers = router.worker_pids()

    # render() refuses everything it could not express, so break its output on purpose.
    real_render = nginx_module.render_nginx_conf
    monkeypatch.setattr(
        nginx_module,
        "render_nginx_conf",
        lambda *a, **kw: real_render(*a, **kw).replace("proxy_pass", "proxy_passs", 1),
    )
    with pytest.raises(RouterConfigRejected, match='unknown directive "proxy_passs"'):
        await router.apply_routes([RouteEntry(None, "/", WEB), RouteEntry(None, "/api/", API)])

    assert router.conf_path.read_text() == good_config
    assert not router.conf_path.with_name("nginx.conf.new").exists()
    assert router.worker_pids() == workers
    assert fetch(router.listen_port, "/").body == "blue"
