"""Route table applies are shared (a group commit) over the fake router: route changes of many
apps at about the same time make one apply, each caller learns whether its own routes went in,
and one app's routes NGINX refuses never keep another app's out."""

from __future__ import annotations

import asyncio

from kiln.controller.groupcommit import GroupCommit
from kiln.controller.routes import sync_routes
from kiln.controller.runtime import ControlPlane
from kiln.model import AppKey, ReleaseOrigin, RolloutState, RouteEntry
from kiln.spec import parse_spec, spec_hash
from tests.controller.world import World, eventually

N = 12
KEYS = [AppKey("dev", f"app{i:02}") for i in range(N)]


def app_spec(key: AppKey, host: str) -> str:
    return (
        f"app: {key.app}\nimage: web:v1\nport: 8080\ninstances: 1\n"
        f"deploy: {{deadline: 30s, drain: 0s}}\nstop_grace: 0s\nroutes: [{{host: {host}}}]\n"
    )


def hosts_of(world: World, key: AppKey) -> set[str | None]:
    return {r.host for r in world.router.routes if r.key == key and not r.preview}


async def stored_apps(world: World) -> ControlPlane:
    """N apps in the store with a release routed to APP.old.test, in NGINX; no round runs for
    them (nothing woke their loops), so only the test moves their planned routes."""
    plane = world.engine.plane
    for key in KEYS:
        spec = parse_spec(app_spec(key, f"{key.app}.old.test"))
        await plane.store.create_release(
            key,
            spec=spec,
            image="web:v1",
            digest=world.driver.images["web:v1"],
            spec_hash=spec_hash(spec),
            created_by="t",
            message="",
            origin=ReleaseOrigin.DEPLOY,
            rollback_of=None,
            scale=1,
            deadline_seconds=30,
            now=plane.clock(),
        )
    assert (await sync_routes(plane)).refused == {}
    assert all(hosts_of(world, key) == {f"{key.app}.old.test"} for key in KEYS)
    return plane


def plan_routes(plane: ControlPlane, key: AppKey, host: str) -> None:
    """What a round does before it syncs: remember the routes it planned for its app."""
    plane.observer.memory[key].routes = (RouteEntry(host, "/", key),)


async def test_route_changes_of_many_apps_at_once_share_one_apply(world: World) -> None:
    plane = await stored_apps(world)
    applies, runs = world.router.applies, plane.route_applies.runs
    for key in KEYS:
        plan_routes(plane, key, f"{key.app}.new.test")

    outcomes = await asyncio.gather(*(sync_routes(plane) for _ in KEYS))

    assert all(o.accepted(key) for o, key in zip(outcomes, KEYS, strict=True))
    assert all(hosts_of(world, key) == {f"{key.app}.new.test"} for key in KEYS)
    assert world.router.applies - applies == 1
    assert plane.route_applies.runs - runs == 1


async def test_callers_that_ask_during_an_apply_share_the_next_one(world: World) -> None:
    plane = await stored_apps(world)
    applies = world.router.applies
    world.router.hold_applies.clear()
    plan_routes(plane, KEYS[0], "first.test")
    first = asyncio.create_task(sync_routes(plane))
    await eventually(lambda: world.router.applies == applies + 1)  # under way, held

    # The others change their routes while it runs: none of them is in that apply's table.
    later = []
    for key in KEYS[1:]:
        plan_routes(plane, key, f"{key.app}.new.test")
        later.append(asyncio.create_task(sync_routes(plane)))
    await asyncio.sleep(0)
    world.router.hold_applies.set()

    assert (await first).accepted(KEYS[0])
    outcomes = await asyncio.gather(*later)
    assert all(o.accepted(key) for o, key in zip(outcomes, KEYS[1:], strict=True))
    assert hosts_of(world, KEYS[0]) == {"first.test"}
    assert all(hosts_of(world, key) == {f"{key.app}.new.test"} for key in KEYS[1:])
    assert world.router.applies - applies == 2  # not N


async def test_one_refused_app_in_a_batch_keeps_its_routes_and_the_others_land(
    world: World,
) -> None:
    plane = await stored_apps(world)
    bad = KEYS[5]
    world.router.refused_hosts["bad.test"] = 'nginx: [emerg] unexpected "bad.test"'
    applies = world.router.applies
    for key in KEYS:
        plan_routes(plane, key, "bad.test" if key == bad else f"{key.app}.new.test")

    outcomes = await asyncio.gather(*(sync_routes(plane) for _ in KEYS))

    # Every caller learns the same thing about every app: only the bad one was refused.
    for outcome in outcomes:
        assert not outcome.accepted(bad) and "bad.test" in outcome.refused[bad]
        assert all(outcome.accepted(key) for key in KEYS if key != bad)
    assert hosts_of(world, bad) == {f"{bad.app}.old.test"}  # its previous routes stay
    assert all(hosts_of(world, key) == {f"{key.app}.new.test"} for key in KEYS if key != bad)
    # Found by halving the batch, not by an apply per changed app.
    assert world.router.applies - applies < N
    rollout = world.store.list_rollouts(bad)[-1]
    assert rollout.state is RolloutState.FAILED and "bad.test" in rollout.reason
    assert all(world.store.active_rollout(key) is not None for key in KEYS if key != bad)


async def test_two_apps_that_break_the_table_only_together_the_first_wins(world: World) -> None:
    plane = await stored_apps(world)
    a, b = KEYS[2], KEYS[9]
    plan_routes(plane, a, "shared.test")
    plan_routes(plane, b, "shared.test")  # the same host and path: a clash
    plan_routes(plane, KEYS[4], "four.test")

    outcome = await sync_routes(plane)

    assert outcome.accepted(a) and outcome.accepted(KEYS[4])
    assert not outcome.accepted(b) and "already served by dev/app02" in outcome.refused[b]
    assert hosts_of(world, a) == {"shared.test"} and hosts_of(world, b) == {"app09.old.test"}
    assert hosts_of(world, KEYS[4]) == {"four.test"}


async def test_many_destroys_at_once_share_applies_and_answer_once_routes_are_gone(
    world: World,
) -> None:
    plane = await stored_apps(world)
    applies, joins = world.router.applies, plane.route_applies.joins
    world.router.hold_applies.clear()
    destroys = [asyncio.create_task(world.engine.destroy(key, who="t")) for key in KEYS]
    await eventually(lambda: plane.route_applies.joins - joins == N)
    assert not any(task.done() for task in destroys)  # none answers before its routes are gone
    world.router.hold_applies.set()

    await asyncio.gather(*destroys)

    assert world.router.routes == ()
    assert world.router.applies - applies <= 2


async def test_a_group_commit_caller_only_joins_a_run_that_starts_after_it_asked() -> None:
    state = {"value": 0}
    gate = asyncio.Event()
    seen: list[list[int]] = []

    async def work(args: list[int]) -> int:
        seen.append(args)
        value = state["value"]  # desired state, read when the run starts
        await gate.wait()
        return value

    commit: GroupCommit[int, int] = GroupCommit(name="test")
    state["value"] = 1
    first = asyncio.create_task(commit.join(1, work))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # the first run is under way, waiting on the gate
    state["value"] = 2
    second = [asyncio.create_task(commit.join(n, work)) for n in (2, 3)]
    await asyncio.sleep(0)
    gate.set()

    assert await first == 1
    assert await asyncio.gather(*second) == [2, 2]
    assert seen == [[1], [2, 3]] and commit.runs == 2
