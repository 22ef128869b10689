"""Route table applies are shared (a group commit) over the fake router: route changes of many
apps at about the same time make one apply, each caller learns whether its own routes went in,
and one app's routes NGINX refuses never keep another app's out; finding it takes checks, not
reloads (a refused batch costs one reload, which cuts the idle keep-alive clients once)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from kiln.controller.groupcommit import GroupCommit
from kiln.controller.routes import sync_routes
from kiln.controller.runtime import ControlPlane
from kiln.model import AppKey, EventKind, RolloutState, RouteEntry
from tests.controller.world import World, eventually, store_release

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
        await store_release(world, key, app_spec(key, f"{key.app}.old.test"))
    assert (await sync_routes(plane)).refused == {}
    assert all(hosts_of(world, key) == {f"{key.app}.old.test"} for key in KEYS)
    return plane


def plan_routes(plane: ControlPlane, key: AppKey, host: str) -> None:
    """What a round does before it syncs: remember the routes it planned for its app."""
    plane.observer.memory[key].routes = (RouteEntry(host, "/", key),)


def reload_count(plane: ControlPlane, result: str) -> float:
    """``kiln_nginx_reloads_total{result=...}`` as a scrape would show it."""
    assert plane.metrics is not None
    value = plane.metrics.registry.get_sample_value("kiln_nginx_reloads_total", {"result": result})
    return value or 0.0


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
    applies, reloads = world.router.applies, world.router.reloads
    ok, rejected = reload_count(plane, "ok"), reload_count(plane, "rejected")
    for key in KEYS:
        plan_routes(plane, key, "bad.test" if key == bad else f"{key.app}.new.test")

    outcomes = await asyncio.gather(*(sync_routes(plane) for _ in KEYS))

    # Every caller learns the same thing about every app: only the bad one was refused.
    for outcome in outcomes:
        assert not outcome.accepted(bad) and "bad.test" in outcome.refused[bad]
        assert all(outcome.accepted(key) for key in KEYS if key != bad)
    assert hosts_of(world, bad) == {f"{bad.app}.old.test"}  # its previous routes stay
    assert all(hosts_of(world, key) == {f"{key.app}.new.test"} for key in KEYS if key != bad)
    # Found by checking halves of the batch (no reload), then applied once: the whole table
    # NGINX refused, and the one with every app but the bad one. One reload in all.
    assert world.router.applies - applies == 2
    assert world.router.reloads - reloads == 1
    assert (reload_count(plane, "ok") - ok, reload_count(plane, "rejected") - rejected) == (1, 1)
    assert 0 < world.router.checks < N
    rollout = world.store.list_rollouts(bad)[-1]
    assert rollout.state is RolloutState.FAILED and "bad.test" in rollout.reason
    assert all(world.store.active_rollout(key) is not None for key in KEYS if key != bad)
    await plane.events.flush()
    failed = [e for e in world.store.list_events(key=bad) if e.kind == EventKind.ROLLOUT_FAILED]
    assert len(failed) == 1 and "NGINX refused the routes of dev/app05" in failed[0].reason


async def test_several_refused_apps_in_a_batch_cost_one_reload(world: World) -> None:
    plane = await stored_apps(world)
    bad = {KEYS[1]: "bad.test", KEYS[6]: "worse.test", KEYS[10]: "worst.test"}
    for host in bad.values():
        world.router.refused_hosts[host] = f'nginx: [emerg] unexpected "{host}"'
    reloads = world.router.reloads
    for key in KEYS:
        plan_routes(plane, key, bad.get(key, f"{key.app}.new.test"))

    outcome = await sync_routes(plane)

    assert outcome.refused.keys() == bad.keys()
    assert all(host in outcome.refused[key] for key, host in bad.items())
    assert all(hosts_of(world, key) == {f"{key.app}.old.test"} for key in bad)
    assert all(hosts_of(world, key) == {f"{key.app}.new.test"} for key in KEYS if key not in bad)
    assert world.router.reloads - reloads == 1
    assert all(world.store.list_rollouts(key)[-1].state is RolloutState.FAILED for key in bad)


async def test_a_batch_nginx_refuses_in_every_change_reloads_nothing(world: World) -> None:
    plane = await stored_apps(world)
    changed = KEYS[3:6]
    for key in changed:
        world.router.refused_hosts[f"{key.app}.bad.test"] = f"nginx: [emerg] {key.app} no"
        plan_routes(plane, key, f"{key.app}.bad.test")
    served, reloads = world.router.routes, world.router.reloads

    outcome = await sync_routes(plane)

    assert {key: outcome.refused[key] for key in changed} == {
        key: f"nginx: [emerg] {key.app} no" for key in changed
    }
    assert world.router.routes == served and world.router.reloads == reloads
    assert all(world.store.list_rollouts(key)[-1].state is RolloutState.FAILED for key in changed)


async def test_a_narrowed_table_nginx_refuses_to_load_changes_nothing_and_fails_no_rollout(
    world: World,
) -> None:
    """Every check passes for the admitted table but the reload fails (a port taken, say):
    NGINX keeps serving what it had, every changed app hears why, no rollout fails, and the
    next sync tries again."""
    plane = await stored_apps(world)
    router = world.router
    router.refused_hosts["bad.test"] = 'nginx: [emerg] unexpected "bad.test"'
    real_check = router.check_routes
    refuse_the_reload = True

    async def check_then_break_the_reload(routes: Sequence[RouteEntry]) -> str | None:
        if refuse_the_reload:
            router.reject_next_config = "nginx: [emerg] bind() to 127.0.0.1:8080 failed"
        return await real_check(routes)

    router.check_routes = check_then_break_the_reload  # type: ignore[method-assign]
    bad, good = KEYS[0], KEYS[1:4]
    plan_routes(plane, bad, "bad.test")
    for key in good:
        plan_routes(plane, key, f"{key.app}.new.test")
    served, reloads = router.routes, router.reloads

    outcome = await sync_routes(plane)

    assert set(outcome.refused) == {bad, *good}
    assert all("bind()" in outcome.refused[key] for key in good)
    assert router.routes == served and router.reloads == reloads
    assert all(world.store.active_rollout(key) is not None for key in (bad, *good))
    await plane.events.flush()
    rejected = world.store.list_events(kinds=[EventKind.ROUTER_CONFIG_REJECTED])
    assert any(e.key is None and "bind()" in e.reason for e in rejected)

    refuse_the_reload = False
    outcome = await sync_routes(plane)

    assert set(outcome.refused) == {bad}
    assert all(hosts_of(world, key) == {f"{key.app}.new.test"} for key in good)
    assert router.reloads - reloads == 1


async def test_two_apps_that_break_the_table_only_together_the_first_wins(world: World) -> None:
    plane = await stored_apps(world)
    a, b = KEYS[2], KEYS[9]
    plan_routes(plane, a, "shared.test")
    plan_routes(plane, b, "shared.test")  # the same host and path: a clash
    plan_routes(plane, KEYS[4], "four.test")

    reloads = world.router.reloads

    outcome = await sync_routes(plane)

    assert outcome.accepted(a) and outcome.accepted(KEYS[4])
    assert not outcome.accepted(b) and "already served by dev/app02" in outcome.refused[b]
    assert hosts_of(world, a) == {"shared.test"} and hosts_of(world, b) == {"app09.old.test"}
    assert hosts_of(world, KEYS[4]) == {"four.test"}
    assert world.router.reloads - reloads == 1


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
