"""The engine over fakes (FakeDriver, FakeRouter, FakeHealth) and a real SQLite store:
deploys, rolling updates, rollbacks, healing and adoption, without Docker or NGINX."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

from kiln.errors import Conflict, ImageNotFound, NotFound, SpecInvalid
from kiln.model import AppKey, Severity
from kiln.store.sqlite import SqliteStore
from tests.controller.world import WEB, World, eventually, running, spec


async def test_first_deploy_starts_routes_and_finishes_the_rollout(world: World) -> None:
    result = await world.engine.deploy(spec(), message="first", who="alice")
    assert result.changed and result.release.number == 1
    assert result.release.digest == world.driver.images["web:v1"]

    await eventually(lambda: len(world.router.peers.get(WEB, [])) == 3)
    await eventually(lambda: world.store.active_rollout(WEB) is None)
    app = world.store.get_app(WEB)
    assert app is not None and app.stable_release == 1
    await world.engine.plane.events.flush()  # the bus writes events in the background
    kinds = [e.kind for e in world.store.list_events(key=WEB)]
    assert kinds[:2] == ["release.created", "rollout.started"]
    assert "rollout.succeeded" in kinds
    assert world.router.routes and world.router.routes[0].host == "web.dev.localhost"


async def test_rolling_update_replaces_every_instance_and_never_drops_capacity(
    world: World,
) -> None:
    await world.engine.deploy(spec(), message="", who="t")
    await eventually(lambda: world.store.active_rollout(WEB) is None and len(world.running()) == 3)

    lowest = 3
    await world.engine.deploy(spec("web:v2"), message="", who="t")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lowest = min(lowest, len(world.router.peers.get(WEB, [])))
        if (
            world.store.active_rollout(WEB) is None
            and world.routed_releases() == {2}
            and len(world.running()) == 3
        ):
            break
        await asyncio.sleep(0.005)
    assert world.routed_releases() == {2}
    assert {i.release for i in world.running()} == {2}
    assert lowest >= 3


async def test_release_that_never_gets_ready_is_rolled_back_at_its_deadline(world: World) -> None:
    world.health.healthy_releases = {1}
    await world.engine.deploy(spec(), message="", who="t")
    await eventually(lambda: world.store.active_rollout(WEB) is None and len(world.running()) == 3)

    await world.engine.deploy(spec("web:broken", deadline="300ms"), message="", who="t")
    await eventually(lambda: world.store.active_rollout(WEB) is None, timeout=10)
    await eventually(lambda: {i.release for i in world.running()} == {1})
    app = world.store.get_app(WEB)
    assert app is not None and app.target_release == 1
    await world.engine.plane.events.flush()  # the bus writes events in the background
    failed = [e for e in world.store.list_events(key=WEB) if e.kind == "rollout.failed"]
    assert "release 2 was not ready within its 0.3s deadline" in failed[-1].reason
    assert "GET /healthz → 500" in failed[-1].reason
    assert world.routed_releases() == {1}
    views = await world.engine.releases(WEB)
    assert [v.result for v in views] == ["current", "failed"]


async def test_crashed_instance_is_replaced(world: World) -> None:
    await world.engine.deploy(spec(), message="", who="t")
    await eventually(lambda: world.store.active_rollout(WEB) is None and len(world.running()) == 3)
    victim = world.running()[0]

    world.driver.crash(victim.id, exit_code=137)

    await eventually(
        lambda: len(world.running()) == 3 and victim.id not in {i.id for i in world.running()}
    )
    await eventually(lambda: victim.id not in {p.instance_id for p in world.router.peers[WEB]})
    await world.engine.plane.events.flush()  # the bus writes events in the background
    exited = [e for e in world.store.list_events(key=WEB) if e.kind == "instance.exited"]
    assert exited and "137" in exited[0].reason and exited[0].instance == victim.id


async def test_a_crash_while_the_event_stream_was_down_is_replaced_when_it_reopens(
    tmp_path: Path,
) -> None:
    w = World(tmp_path)
    # No resync to fall back on: only the watch reopening can tell the app to look again.
    w.settings = replace(w.settings, resync_seconds=3600)
    w.engine = w.new_engine()
    await w.engine.start()
    try:
        await w.engine.deploy(spec(), message="", who="t")
        await eventually(lambda: w.store.active_rollout(WEB) is None and len(w.running()) == 3)
        victim = w.running()[0]

        w.driver.drop_streams()
        w.driver.crash(victim.id, exit_code=137)  # its die event reaches no one

        await eventually(
            lambda: len(w.running()) == 3 and victim.id not in {i.id for i in w.running()}
        )
    finally:
        await w.engine.close()


async def test_unhealthy_instance_is_taken_out_and_replaced(world: World) -> None:
    await world.engine.deploy(spec(), message="", who="t")
    await eventually(lambda: world.store.active_rollout(WEB) is None and len(world.running()) == 3)
    sick = world.running()[0]

    world.health.fail_liveness(sick.id)

    await eventually(
        lambda: sick.id not in {i.id for i in world.running()} and len(world.running()) == 3
    )
    await world.engine.plane.events.flush()  # the bus writes events in the background
    kinds = [e.kind for e in world.store.list_events(key=WEB) if e.instance == sick.id]
    assert "instance.unhealthy" in kinds


async def test_restarted_engine_adopts_running_instances_without_replacing_them(
    world: World,
) -> None:
    await world.engine.deploy(spec(), message="", who="t")
    await eventually(lambda: world.store.active_rollout(WEB) is None and len(world.running()) == 3)
    before = {i.container_id for i in world.running()}
    await world.engine.close()

    world.store = SqliteStore(world.settings.db_path)
    world.health.statuses.clear()
    world.health.healthy_releases = set()  # only the router's memory can vouch for them now
    world.engine = world.new_engine()
    await world.engine.start()
    await asyncio.sleep(0.5)
    assert {i.container_id for i in world.running()} == before
    assert len(world.router.peers[WEB]) == 3


async def test_containers_of_unknown_apps_are_removed(world: World) -> None:
    await world.engine.deploy(spec(instances=1), message="", who="t")
    await eventually(lambda: len(world.running()) == 1)
    await world.engine.close()
    world.store = SqliteStore(world.settings.db_path)
    world.store.delete_app(WEB)  # the store lost the app; its container is now an orphan
    world.engine = world.new_engine()
    await world.engine.start()
    await eventually(lambda: not world.running())


async def test_bad_inputs_change_nothing(world: World) -> None:
    with pytest.raises(SpecInvalid) as invalid:
        await world.engine.deploy("app: web\nimage: web:v1\ninstances: -1\n", message="", who="t")
    assert "instances: must be ≥ 0, got -1" in invalid.value.problems
    with pytest.raises(ImageNotFound):
        await world.engine.deploy(spec("web:nope"), message="", who="t")
    with pytest.raises(NotFound):
        await world.engine.status(WEB)
    with pytest.raises(NotFound):
        await world.engine.rollback(WEB, to=None, message="", who="t")
    assert world.store.list_apps() == []
    assert world.driver.started == []


async def test_route_clash_with_another_app_is_refused(world: World) -> None:
    routed = "routes: [{host: shop.test}]\n"
    await world.engine.deploy(spec(instances=1, extra=routed), message="", who="t")
    other = "app: api\nimage: api:v1\nport: 8080\nroutes: [{host: shop.test}]\n"
    with pytest.raises(Conflict, match=r"shop\.test"):
        await world.engine.deploy(other, message="", who="t")
    assert world.store.get_app(AppKey("dev", "api")) is None


async def test_rollback_reuses_an_earlier_release_as_a_new_one(world: World) -> None:
    await world.engine.deploy(spec(), message="", who="t")
    await eventually(lambda: world.store.active_rollout(WEB) is None)
    await world.engine.deploy(spec("web:v2"), message="", who="t")
    await eventually(lambda: world.store.active_rollout(WEB) is None)

    result = await world.engine.rollback(WEB, to=None, message="", who="bob")
    assert result.release.number == 3
    assert result.release.rollback_of == 1
    assert result.release.digest == world.driver.images["web:v1"]
    await eventually(
        lambda: world.store.active_rollout(WEB) is None and world.routed_releases() == {3}
    )
    with pytest.raises(Conflict):
        await world.engine.rollback(WEB, to=3, message="", who="bob")


async def test_scale_and_stop(world: World) -> None:
    await world.engine.deploy(spec(instances=2), message="", who="t")
    await eventually(lambda: len(world.running()) == 2)
    await world.engine.scale(WEB, 4, who="t")
    await eventually(lambda: len(world.running()) == 4 and len(world.router.peers[WEB]) == 4)
    await world.engine.stop(WEB, who="t")
    await eventually(lambda: not world.running() and world.router.peers[WEB] == [])
    assert (await world.engine.status(WEB)).state == "stopped"


async def test_engine_outage_is_reported_and_recovered(world: World) -> None:
    await world.engine.deploy(spec(instances=1), message="", who="t")
    await eventually(lambda: len(world.running()) == 1)
    world.driver.go_down()
    await eventually(
        lambda: any(e.kind == "driver.unavailable" for e in world.store.list_events()), timeout=5
    )
    world.driver.come_back()
    await eventually(
        lambda: any(e.kind == "driver.available" for e in world.store.list_events()), timeout=5
    )
    assert len(world.running()) == 1


async def test_destroy_removes_instances_routes_and_the_peer_list(world: World) -> None:
    await world.engine.deploy(spec(instances=2), message="", who="t")
    await eventually(lambda: len(world.router.peers.get(WEB, [])) == 2)
    await world.engine.destroy(WEB, who="t")
    assert world.router.routes == ()  # traffic stopped before the answer
    assert world.store.get_app(WEB) is None
    with pytest.raises(NotFound):
        await world.engine.status(WEB)
    await eventually(lambda: not world.running() and WEB not in world.router.peers)


def draining_spec(image: str = "web:v1") -> str:
    """Instances that drain for up to 30 s: one with a request in flight keeps running."""
    return (
        f"app: web\nimage: {image}\nport: 8080\ninstances: 2\n"
        "deploy: {deadline: 30s, drain: 30s}\nstop_grace: 0s\n"
    )


async def test_destroy_answers_before_the_instances_drain(world: World) -> None:
    await world.engine.deploy(draining_spec(), message="", who="t")
    await eventually(lambda: len(world.router.peers.get(WEB, [])) == 2)
    old = {i.id for i in world.running()}
    world.router.in_flight_counts = {WEB: dict.fromkeys(old, 1)}

    await world.engine.destroy(WEB, who="t")

    assert world.router.routes == ()
    assert await world.engine.list_status() == []
    assert {i.id for i in world.running()} == old  # still draining: it answered anyway
    world.router.in_flight_counts = {WEB: {}}
    await eventually(lambda: not world.running() and WEB not in world.router.peers)


async def test_instances_of_a_destroyed_app_are_removed_after_a_restart(world: World) -> None:
    await world.engine.deploy(draining_spec(), message="", who="t")
    await eventually(lambda: len(world.router.peers.get(WEB, [])) == 2)
    world.router.in_flight_counts = {WEB: {i.id: 1 for i in world.running()}}
    await world.engine.destroy(WEB, who="t")
    await world.engine.close()  # kiln stops while they still drain
    assert len(world.running()) == 2

    world.router.in_flight_counts = {WEB: {}}
    world.store = SqliteStore(world.settings.db_path)
    world.engine = world.new_engine()
    await world.engine.start()
    await eventually(lambda: not world.running() and WEB not in world.router.peers)


async def test_destroy_with_wait_answers_once_the_instances_are_gone(world: World) -> None:
    await world.engine.deploy(draining_spec(), message="", who="t")
    await eventually(lambda: len(world.router.peers.get(WEB, [])) == 2)
    world.router.in_flight_counts = {WEB: {i.id: 1 for i in world.running()}}
    destroying = asyncio.create_task(world.engine.destroy(WEB, who="t", wait=True))
    await eventually(lambda: world.router.routes == ())
    assert not destroying.done()  # its instances still serve their requests
    world.router.in_flight_counts = {WEB: {}}
    await asyncio.wait_for(destroying, timeout=10)
    assert not world.running()


async def test_a_redeploy_right_after_a_destroy_starts_new_instances(world: World) -> None:
    await world.engine.deploy(draining_spec(), message="", who="t")
    await eventually(lambda: len(world.router.peers.get(WEB, [])) == 2)
    old = {i.container_id for i in world.running()}
    world.router.in_flight_counts = {WEB: {i.id: 1 for i in world.running()}}
    await world.engine.destroy(WEB, who="t")

    # Release numbers start again at 1: the old release 1's containers, still draining, must
    # not pass for the new release 1's. The deploy waits until they are gone.
    deploying = asyncio.create_task(
        world.engine.deploy(draining_spec("web:v2"), message="", who="t")
    )
    await eventually(lambda: world.router.peers.get(WEB) == [])  # the old ones drain
    assert not deploying.done() and world.store.get_app(WEB) is None
    world.router.in_flight_counts = {WEB: {}}
    result = await asyncio.wait_for(deploying, timeout=10)

    assert result.release.number == 1
    assert result.release.digest == world.driver.images["web:v2"]
    await eventually(lambda: world.store.active_rollout(WEB) is None)
    running = world.running()
    assert len(running) == 2 and not {i.container_id for i in running} & old
    assert {world.driver.containers[i.container_id].spec.image for i in running} == {
        world.driver.images["web:v2"]
    }
    assert world.routed_releases() == {1}


async def test_the_engines_network_and_host_notes_are_warnings_at_start(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.driver.notes = ["the bridge needs a MAC address"]
    world.driver.host_tuning = ["raise fs.inotify.max_user_instances"]
    async with running(world):
        await world.engine.plane.events.flush()
        said = {
            (e.kind, e.reason, e.severity)
            for e in world.store.list_events()
            if e.kind in ("driver.network", "driver.host")
        }
        assert said == {
            ("driver.network", "the bridge needs a MAC address", Severity.WARNING),
            ("driver.host", "raise fs.inotify.max_user_instances", Severity.WARNING),
        }
