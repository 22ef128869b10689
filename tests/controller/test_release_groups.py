"""Release groups through the controller, over fakes (FakeDriver, FakeRouter, FakeHealth) and a
real SQLite store: routes that follow the serving release, canary and blue-green rollouts
steered by commands, a rollback inside the window that starts nothing, abort, retry, in-flight
drain, worker apps, route tables NGINX refuses, and an orchestrator driver."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kiln.drivers.fake_orchestrator import FakeOrchestratorDriver
from kiln.errors import Conflict
from kiln.model import AppKey, RolloutState, RouteEntry
from kiln.store.sqlite import SqliteStore
from tests.controller.world import WEB, World, eventually

API = AppKey("dev", "api")


def app_spec(
    image: str = "web:v1",
    *,
    app: str = "web",
    instances: int = 3,
    deploy: str = "",
    extra: str = "",
    host: str | None = None,
) -> str:
    routes = f"routes: [{{host: {host}}}]\n" if host else ""
    return (
        f"app: {app}\nimage: {image}\nport: 8080\ninstances: {instances}\n"
        f"deploy: {{deadline: 30s, drain: 5s{', ' + deploy if deploy else ''}}}\n"
        f"stop_grace: 0s\n{routes}{extra}"
    )


CANARY = "strategy: canary, steps: [{weight: 20, pause: 0.2s}, {weight: 60}], rollback_window: 1m"
BLUE_GREEN = "strategy: blue-green, rollback_window: 1m"


async def settled(world: World, key: AppKey = WEB) -> None:
    await eventually(lambda: world.store.active_rollout(key) is None)


def hosts(world: World, key: AppKey = WEB) -> set[str | None]:
    return {r.host for r in world.router.routes if r.key == key and not r.preview}


def shares(world: World, key: AppKey = WEB) -> dict[int, int] | None:
    policy = world.router.policies.get(key)
    return None if policy is None else dict(policy.shares)


@pytest.fixture
async def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    await w.engine.start()
    yield w  # type: ignore[misc]
    await w.engine.close()


async def test_routes_follow_the_release_that_serves_after_an_automatic_rollback(
    world: World,
) -> None:
    world.health.healthy_releases = {1}
    await world.engine.deploy(app_spec(host="a.test"), message="", who="t")
    await settled(world)
    assert hosts(world) == {"a.test"}

    broken = app_spec("web:broken", host="b.test").replace("deadline: 30s", "deadline: 0.5s")
    await world.engine.deploy(broken, message="", who="t")
    await asyncio.sleep(0.2)
    assert hosts(world) == {"a.test"}  # release 2 takes no traffic, so its routes are not live
    await settled(world)
    await eventually(lambda: hosts(world) == {"a.test"})
    status = await world.engine.status(WEB)
    assert status.urls[0].startswith("http://a.test")


async def test_a_new_release_routes_go_live_when_it_takes_traffic(world: World) -> None:
    await world.engine.deploy(app_spec(host="a.test"), message="", who="t")
    await settled(world)
    await world.engine.deploy(app_spec("web:v2", host="b.test"), message="", who="t")
    await settled(world)
    await eventually(lambda: hosts(world) == {"b.test"})


async def test_canary_moves_through_its_steps_and_waits_for_promote(world: World) -> None:
    await world.engine.deploy(app_spec(instances=5), message="", who="t")
    await settled(world)

    await world.engine.deploy(app_spec("web:v2", instances=5, deploy=CANARY), message="", who="t")
    await eventually(lambda: shares(world) == {1: 80, 2: 20})
    await eventually(lambda: shares(world) == {1: 40, 2: 60})
    assert len([i for i in world.running() if i.release == 1]) == 5  # stable keeps its size
    await asyncio.sleep(0.3)
    assert world.store.active_rollout(WEB) is not None  # a step without pause waits

    view = await world.engine.promote(WEB, full=False, who="alice")
    assert view.active
    await settled(world)
    assert shares(world) == {1: 0, 2: 100}
    app = world.store.get_app(WEB)
    assert app is not None and (app.stable_release, app.warm_release) == (2, 1)
    await world.engine.plane.events.flush()  # the bus writes events in the background
    kinds = [e.kind for e in world.store.list_events(key=WEB)]
    assert "rollout.promoted" in kinds and kinds[-1] != "rollout.failed"


async def test_abort_sends_all_traffic_back_and_keeps_the_canary_for_inspection(
    world: World,
) -> None:
    await world.engine.deploy(app_spec(), message="", who="t")
    await settled(world)
    await world.engine.deploy(app_spec("web:v2", deploy=CANARY), message="", who="t")
    await eventually(lambda: (shares(world) or {}).get(2, 0) > 0)

    view = await world.engine.abort(WEB, who="alice")

    assert not view.active and view.held_release == 2
    await eventually(lambda: world.routed_releases() == {1})
    await asyncio.sleep(0.3)
    assert [i for i in world.running() if i.release == 2]  # still up, out of the router
    rollout = world.store.list_rollouts(WEB)[-1]
    assert rollout.state is RolloutState.ABORTED and "aborted by alice" in rollout.reason

    retried = await world.engine.retry(WEB, who="alice")
    assert retried.active and retried.rollout is not None
    assert retried.rollout.to_release == 2
    await eventually(lambda: (shares(world) or {}).get(2, 0) == 20)


async def test_blue_green_preview_promote_and_rollback_inside_the_window(world: World) -> None:
    await world.engine.deploy(app_spec(), message="", who="t")
    await settled(world)
    await world.engine.deploy(app_spec("web:v2", deploy=BLUE_GREEN), message="", who="t")

    await eventually(lambda: len([p for p in world.router.peers[WEB] if p.release == 2]) == 3)
    assert shares(world) == {1: 100, 2: 0}
    policy = world.router.policies[WEB]
    assert policy is not None and policy.preview == 2
    preview = [r for r in world.router.routes if r.preview]
    assert preview == [
        RouteEntry(host="web.preview.dev.localhost", path="/", key=WEB, preview=True)
    ]

    await world.engine.promote(WEB, full=False, who="alice")
    await settled(world)
    assert shares(world) == {1: 0, 2: 100}
    started_before = len(world.driver.started)

    result = await world.engine.rollback(WEB, to=None, message="", who="bob")

    assert result.release.number == 1  # no new release: a switch back to the warm one
    await settled(world)
    assert shares(world) == {1: 100, 2: 0}
    assert len(world.driver.started) == started_before
    assert [r.number for r in world.store.list_releases(WEB)] == [1, 2]


async def test_steering_a_rolling_rollout_is_refused_with_the_reason(world: World) -> None:
    world.health.healthy_releases = set()
    await world.engine.deploy(app_spec(), message="", who="t")
    with pytest.raises(Conflict, match="moves on by itself"):
        await world.engine.promote(WEB, full=False, who="t")
    with pytest.raises(Conflict, match="rollout in progress; `kiln abort web` first"):
        await world.engine.retry(WEB, who="t")


async def test_a_retiring_instance_stops_only_when_its_requests_have_finished(
    world: World,
) -> None:
    await world.engine.deploy(app_spec(instances=1), message="", who="t")
    await settled(world)
    old = world.running()[0]
    world.router.in_flight_counts = {WEB: {old.id: 2}}

    await world.engine.deploy(app_spec("web:v2", instances=1), message="", who="t")
    await eventually(lambda: world.routed_releases() == {2})
    await asyncio.sleep(0.5)
    assert old.id in {i.id for i in world.running()}  # two slow requests still in flight

    world.router.in_flight_counts = {WEB: {}}
    await eventually(lambda: old.id not in {i.id for i in world.running()})


async def test_a_worker_without_a_port_is_ready_when_it_runs(world: World) -> None:
    worker = "app: jobs\nimage: web:v1\ninstances: 2\nstop_grace: 0s\n"
    await world.engine.deploy(worker, message="", who="t")
    await settled(world, AppKey("dev", "jobs"))
    app = world.store.get_app(AppKey("dev", "jobs"))
    assert app is not None and app.stable_release == 1
    assert not [r for r in world.router.routes if r.key == AppKey("dev", "jobs")]


async def test_a_route_table_nginx_refuses_fails_only_the_release_that_brought_it(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    # A fake NGINX that refuses any config with a route to bad.test (applied or checked).
    world.router.refused_hosts["bad.test"] = 'nginx: [emerg] unexpected "bad.test"'
    await world.engine.start()
    try:
        await world.engine.deploy(app_spec(host="a.test"), message="", who="t")
        await settled(world)
        await world.engine.deploy(app_spec("web:v2", host="bad.test"), message="", who="t")
        await settled(world)
        failed = world.store.list_rollouts(WEB)[-1]
        assert failed.state is RolloutState.FAILED and "bad.test" in failed.reason

        # Another app deploys and gets its routes meanwhile; kiln restarts fine.
        api = app_spec("api:v1", app="api", instances=1, host="api.test")
        await world.engine.deploy(api, message="", who="t")
        await settled(world, API)
        await eventually(lambda: hosts(world, API) == {"api.test"})
        assert hosts(world) == {"a.test"}
        await world.engine.close()
        world.store = SqliteStore(world.settings.db_path)
        world.engine = world.new_engine()
        await world.engine.start()
        await asyncio.sleep(0.3)
        assert hosts(world, API) == {"api.test"} and hosts(world) == {"a.test"}
    finally:
        await world.engine.close()


async def test_an_orchestrator_driver_gets_group_targets_and_heals_on_its_own(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    orchestrator = FakeOrchestratorDriver()
    for tag in ("web:v1", "web:v2"):
        orchestrator.add_image(tag)
    world.driver = orchestrator
    world.engine = world.new_engine()
    await world.engine.start()
    try:
        await world.engine.deploy(app_spec(), message="", who="t")
        await settled(world)
        assert {(g.release, g.replicas) for g in orchestrator.scaled[-1:]} == {(1, 3)}
        await world.engine.deploy(app_spec("web:v2"), message="", who="t")
        await settled(world)
        await eventually(lambda: {i.release for i in world.running()} == {2})
        assert len(world.running()) == 3

        victim = world.running()[0]
        orchestrator.crash(victim.id)
        await eventually(lambda: len(world.running()) == 3 and victim.id in orchestrator.restarted)
        await eventually(lambda: victim.id not in {p.instance_id for p in world.router.peers[WEB]})
        await world.engine.plane.events.flush()  # the bus writes events in the background
        assert not [e for e in world.store.list_events(key=WEB) if e.kind == "group.scale_failed"]
    finally:
        await world.engine.close()
