"""Checking a route table on a private NGINX without applying it (``check_routes``), and the
controller narrowing a refused table down with such checks: the apps whose routes NGINX refuses
keep their previous routes, the others' go in, and the whole batch costs one reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kiln.controller.routes import sync_routes
from kiln.controller.runtime import ControlPlane
from kiln.model import AppKey, EventKind, RolloutState, RouteEntry
from kiln.router import nginx as nginx_module
from kiln.router.nginx import NginxRouter
from tests.controller.world import World, store_release

from .conftest import Backends
from .support import fetch, peer

pytestmark = pytest.mark.integration

WEB = AppKey("dev", "web")
API = AppKey("dev", "api")
BROKEN = "kiln_no_such_directive"


def break_host(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    """Make every config with a server for ``host`` one NGINX refuses (render() itself never
    writes such a config, so break its output on purpose)."""
    real_render = nginx_module.render_nginx_conf
    line = f"server_name {host};"

    def render(*args: Any, **kwargs: Any) -> str:
        return real_render(*args, **kwargs).replace(line, f"{line}\n        {BROKEN} on;")

    monkeypatch.setattr(nginx_module, "render_nginx_conf", render)


async def test_a_check_answers_without_touching_what_nginx_serves(
    router: NginxRouter, backends: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(WEB, [peer("blue", backends.start("blue"))])
    live_config, live_routes = router.conf_path.read_text(), router.routes_file.read_text()
    workers, generation = router.worker_pids(), (await router.status()).generation
    break_host(monkeypatch, "bad.test")

    refused = await router.check_routes(
        [RouteEntry(None, "/", WEB), RouteEntry("bad.test", "/", API)]
    )
    clash = await router.check_routes([RouteEntry(None, "/", WEB), RouteEntry(None, "/", API)])
    passed = await router.check_routes(
        [RouteEntry(None, "/", WEB), RouteEntry("api.test", "/", API)]
    )

    assert refused is not None and f'unknown directive "{BROKEN}"' in refused
    assert clash is not None and "two routes" in clash
    assert passed is None
    assert await router.check_routes([RouteEntry(None, "/", WEB)]) is None  # the live table
    # Nothing NGINX serves moved: same files, no candidate left, no reload.
    assert router.conf_path.read_text() == live_config
    assert router.routes_file.read_text() == live_routes
    assert not router.conf_path.with_name("nginx.conf.new").exists()
    assert router.worker_pids() == workers
    assert (await router.status()).generation == generation
    assert fetch(router.listen_port, "/", host="api.test").body == "blue"  # still web's


def routed_to(router: NginxRouter, host: str) -> str:
    """Which app answers for ``host``: the apps have no instances, so an app's route answers
    503 "no ready instance of ENV/APP"; a host no app serves gets a 404."""
    answer = fetch(router.listen_port, "/", host=host)
    if answer.status == 404:
        return "nobody"
    assert answer.status == 503, answer
    return answer.body.strip().removeprefix("no ready instance of ")


async def store_app(world: World, key: AppKey, host: str) -> None:
    """An app with one release routed to ``host``, in the store; nothing wakes its loop, so
    only the test moves its planned routes."""
    await store_release(
        world,
        key,
        f"app: {key.app}\nimage: web:v1\nport: 8080\ninstances: 1\n"
        f"deploy: {{deadline: 30s, drain: 0s}}\nstop_grace: 0s\nroutes: [{{host: {host}}}]\n",
    )


def reload_count(plane: ControlPlane, result: str) -> float:
    assert plane.metrics is not None
    value = plane.metrics.registry.get_sample_value("kiln_nginx_reloads_total", {"result": result})
    return value or 0.0


async def test_a_batch_with_an_app_nginx_refuses_lands_the_others_with_one_reload(
    router: NginxRouter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "kiln"
    home.mkdir()
    world = World(home)
    world.router = router  # type: ignore[assignment]  # the real NGINX, not the fake
    world.engine = world.new_engine()
    await world.engine.start()
    try:
        plane = world.engine.plane
        keys = [AppKey("dev", f"app{i}") for i in range(6)]
        for key in keys:
            await store_app(world, key, f"{key.app}.old.test")
        assert (await sync_routes(plane)).refused == {}
        assert all(routed_to(router, f"{key.app}.old.test") == str(key) for key in keys)

        bad = keys[3]
        break_host(monkeypatch, "bad.test")
        generation = (await router.status()).generation
        ok, rejected = reload_count(plane, "ok"), reload_count(plane, "rejected")
        for key in keys:
            host = "bad.test" if key == bad else f"{key.app}.new.test"
            plane.observer.memory[key].routes = (RouteEntry(host, "/", key),)

        outcome = await sync_routes(plane)

        assert set(outcome.refused) == {bad}
        assert f'unknown directive "{BROKEN}"' in outcome.refused[bad]
        assert routed_to(router, "bad.test") == "nobody"
        assert routed_to(router, f"{bad.app}.old.test") == str(bad)  # its previous routes
        for key in keys:
            if key != bad:
                assert routed_to(router, f"{key.app}.new.test") == str(key)
                assert routed_to(router, f"{key.app}.old.test") == "nobody"
        # The narrowing checked; NGINX reloaded once, for the table it ended with.
        assert (await router.status()).generation == generation + 1
        assert reload_count(plane, "ok") - ok == 1
        assert reload_count(plane, "rejected") - rejected == 1  # the whole batch, never loaded
        assert not router.conf_path.with_name("nginx.conf.new").exists()
        rollout = world.store.list_rollouts(bad)[-1]
        assert rollout.state is RolloutState.FAILED and BROKEN in rollout.reason
        assert all(world.store.active_rollout(key) is not None for key in keys if key != bad)
        await plane.events.flush()
        failed = world.store.list_events(key=bad, kinds=[EventKind.ROLLOUT_FAILED])
        assert len(failed) == 1 and BROKEN in failed[0].reason
    finally:
        await world.engine.close()
