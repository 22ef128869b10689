"""Secrets through the engine (fakes for Docker and NGINX, real SQLite): a release pins the
versions it uses, a new value needs a new release, a rollback brings the old value back, and
no value reaches the store's plain columns, an event or a plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.errors import Conflict, InvalidInput
from kiln.model import AppKey
from tests.controller.world import World, eventually

WEB = AppKey("dev", "web")
OLD, NEW = b"old-value-3a9f1c", b"new-value-7b2e4d"

SPEC = (
    "app: web\nimage: web:v1\nport: 8080\ninstances: 2\n"
    "deploy: {deadline: 30s, drain: 0s}\nstop_grace: 0s\n"
    "secrets: [DB_PASSWORD, {name: API_TOKEN, as: env}]\n"
)


def values_running(world: World) -> set[bytes]:
    return {
        world.driver.secrets_of[i.container_id]["DB_PASSWORD"]
        for i in world.running()
        if i.container_id in world.driver.secrets_of
    }


async def settled(world: World, release: int) -> None:
    await eventually(
        lambda: (
            world.store.active_rollout(WEB) is None
            and {i.release for i in world.running()} == {release}
            and len(world.running()) == 2
        )
    )


async def test_a_release_pins_versions_and_a_rollback_restores_the_old_value(
    world: World,
) -> None:
    engine = world.engine
    with pytest.raises(InvalidInput, match="DB_PASSWORD is not set for dev/web"):
        await engine.deploy(SPEC, message="", who="ann")
    await engine.set_secret(WEB, "DB_PASSWORD", OLD, deploy=False, who="ann")
    await engine.set_secret(WEB, "API_TOKEN", b"token-1", deploy=False, who="ann")
    first = await engine.deploy(SPEC, message="", who="ann")
    assert first.release.secret_versions == {"DB_PASSWORD": 1, "API_TOKEN": 1}
    await settled(world, 1)
    assert values_running(world) == {OLD}
    spec = next(s for s in world.driver.started if s.release == 1)
    assert {(r.name, r.version, r.as_env) for r in spec.secrets} == {
        ("DB_PASSWORD", 1, False),
        ("API_TOKEN", 1, True),
    }

    # A new value changes nothing that runs ...
    result = await engine.set_secret(WEB, "DB_PASSWORD", NEW, deploy=False, who="bob")
    assert result.version == 2 and result.changed
    assert values_running(world) == {OLD}
    assert world.store.get_app(WEB).target_release == 1  # type: ignore[union-attr]
    # ... until a release pins it: the same spec is no longer "nothing changed".
    second = await engine.deploy(SPEC, message="", who="ann")
    assert second.changed and second.release.secret_versions["DB_PASSWORD"] == 2
    await settled(world, 2)
    assert values_running(world) == {NEW}
    again = await engine.deploy(SPEC, message="", who="ann")
    assert not again.changed

    diff = await engine.diff_releases(WEB, 1, 2)
    assert [(c.path, c.before, c.after) for c in diff.secrets] == [("DB_PASSWORD", 1, 2)]
    assert not diff.changes and not diff.digest_changed

    back = await engine.rollback(WEB, to=None, message="", who="ann")
    assert back.release.secret_versions == {"DB_PASSWORD": 1, "API_TOKEN": 1}
    await settled(world, 3)
    assert values_running(world) == {OLD}


async def test_set_with_deploy_makes_the_release_and_remove_is_refused_while_pinned(
    world: World,
) -> None:
    engine = world.engine
    await engine.set_secret(WEB, "DB_PASSWORD", OLD, deploy=False, who="ann")
    await engine.set_secret(WEB, "API_TOKEN", b"t", deploy=False, who="ann")
    await engine.deploy(SPEC, message="", who="ann")
    await settled(world, 1)
    result = await engine.set_secret(WEB, "DB_PASSWORD", NEW, deploy=True, who="ann")
    assert result.deploy is not None and result.deploy.release.number == 2
    assert result.deploy.release.secret_versions["DB_PASSWORD"] == 2
    await settled(world, 2)
    assert values_running(world) == {NEW}
    with pytest.raises(Conflict, match="used by release"):
        await engine.remove_secret(WEB, "DB_PASSWORD", who="ann")
    views = await engine.list_secrets(WEB)
    assert [(v.name, v.version, v.in_use) for v in views] == [
        ("API_TOKEN", 1, 1),
        ("DB_PASSWORD", 2, 2),
    ]


async def test_no_value_reaches_events_the_store_file_or_a_plan(
    world: World, tmp_path: Path
) -> None:
    engine = world.engine
    await engine.set_secret(WEB, "DB_PASSWORD", OLD, deploy=False, who="ann")
    await engine.set_secret(WEB, "API_TOKEN", NEW, deploy=False, who="ann")
    await engine.deploy(SPEC, message="", who="ann")
    await settled(world, 1)
    rotation = await engine.rotate_master_key(who="ann")
    assert rotation.reencrypted == 2
    await engine.scale(WEB, 3, who="ann")  # a new instance after the rotation still gets it
    await eventually(lambda: len(values_running(world)) == 1 and len(world.running()) == 3)
    assert values_running(world) == {OLD}
    await world.engine.plane.events.flush()  # the bus writes events in the background
    texts = [repr(e) for e in world.store.list_events(limit=1000)]
    texts += [repr(p) for p in world.engine.plane.last_plans.values()]
    texts += [repr(s) for s in world.driver.started]
    files = [path.read_bytes() for path in sorted(tmp_path.glob("kiln.db*"))]  # noqa: ASYNC240
    for value in (OLD, NEW):
        assert not any(value.decode() in t for t in texts)
        assert not any(value in data for data in files)
