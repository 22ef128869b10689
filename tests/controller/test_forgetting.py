"""What kiln keeps in memory for an app, an instance or a release goes once they are gone: a
server that deploys and destroys apps all day does not grow (issue 10)."""

from __future__ import annotations

from kiln.controller.runtime import ControlPlane
from kiln.model import AppKey
from tests.controller.world import WEB, World, eventually, spec

API = AppKey("dev", "api")


def kept_for(plane: ControlPlane, key: AppKey) -> dict[str, object]:
    """Every per-app or per-instance record the control plane holds for ``key``."""
    kept: dict[str, object] = {
        "loop": key in set(plane.loops.keys()),
        "last_error": key in plane.loops.last_error,
        "observer memory": key in plane.observer.memory,
        "last plan": key in plane.last_plans,
        "last instances": key in plane.last_instances,
        "known instances": key in plane.known_instances,
        "instance keys": [i for i, app in plane.instance_keys.items() if app == key],
        "release cache": [n for n in range(1, 5) if plane.store.cached_release(key, n)],
    }
    assert plane.logs is not None
    kept["log copies"] = [c for c, app in plane.logs.collected().items() if app == key]
    return {what: value for what, value in kept.items() if value}


async def deploy_twice_with_a_restart(world: World) -> None:
    """Two releases (so instances were replaced) and a liveness restart (a labelled metric)."""
    await world.engine.deploy(spec(), message="", who="t")
    await eventually(lambda: world.store.active_rollout(WEB) is None and len(world.running()) == 3)
    world.health.fail_liveness(world.running()[0].id)
    await eventually(
        lambda: (
            len(world.running()) == 3
            and all(world.health.status(i.id).live for i in world.running())
        )
    )
    await world.engine.deploy(spec("web:v2"), message="", who="t")
    await eventually(
        lambda: (
            world.store.active_rollout(WEB) is None
            and {i.release for i in world.running()} == {2}
            and len(world.running()) == 3
        )
    )


async def test_a_destroyed_app_leaves_nothing_behind_in_the_control_plane(world: World) -> None:
    await world.engine.deploy(spec("api:v1").replace("app: web", "app: api"), message="", who="t")
    await deploy_twice_with_a_restart(world)
    metrics = (await world.engine.metrics()).decode()
    assert 'kiln_restarts_total{app="web",env="dev",reason="liveness"}' in metrics

    await world.engine.destroy(WEB, who="t", wait=True)
    plane = world.engine.plane
    await eventually(lambda: not kept_for(plane, WEB))

    assert kept_for(plane, WEB) == {}
    assert WEB not in world.router.peers
    assert plane.health.tracked_ids() == {i.id for i in world.running(API)}
    metrics = (await world.engine.metrics()).decode()
    assert 'app="web"' not in metrics
    # The other app is untouched: its loop, its memory and its series stay.
    assert {"loop", "observer memory", "last plan", "instance keys"} <= set(kept_for(plane, API))
    assert 'app="api"' in metrics


async def test_replaced_instances_are_forgotten_while_the_app_lives(world: World) -> None:
    await deploy_twice_with_a_restart(world)
    plane = world.engine.plane
    running = {i.id for i in world.running()}
    containers = {i.container_id for i in world.running()}

    await eventually(lambda: set(plane.instance_keys) == running)
    assert plane.logs is not None
    await eventually(lambda: set(plane.logs.collected()) == containers)
    assert plane.health.tracked_ids() == running
    # The destroy event forgets an instance's key at once; its app's next round (a listing
    # without it) drops it from the instances kiln knows.
    await eventually(lambda: set(plane.known_instances[WEB]) == running)


async def test_an_app_deployed_again_after_its_destroy_runs_as_new(world: World) -> None:
    await world.engine.deploy(spec(), message="", who="t")
    await eventually(lambda: world.store.active_rollout(WEB) is None and len(world.running()) == 3)
    await world.engine.destroy(WEB, who="t", wait=True)
    await eventually(lambda: not kept_for(world.engine.plane, WEB))

    await world.engine.deploy(spec(), message="", who="t")

    await eventually(lambda: world.store.active_rollout(WEB) is None and len(world.running()) == 3)
    await eventually(lambda: len(world.router.peers.get(WEB, [])) == 3)


async def test_the_removal_of_a_left_over_container_does_not_forget_the_instance_running_now(
    world: World,
) -> None:
    # Docker: a start whose name is held by a left-over container removes that one first; its
    # destroy event names the same instance id as the container that now runs.
    await world.engine.deploy(spec(instances=1), message="", who="t")
    await eventually(lambda: world.store.active_rollout(WEB) is None and len(world.running()) == 1)
    plane = world.engine.plane
    (running,) = world.running()
    await eventually(lambda: [i.id for i in plane.last_instances.get(WEB, [])] == [running.id])

    plane.forget_instance(WEB, running.id, "0" * 64)  # the left-over container's destroy

    assert plane.instance_keys[running.id] == WEB
    assert running.id in plane.health.tracked_ids()
