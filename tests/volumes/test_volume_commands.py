"""Volume commands through the engine (fakes for Docker and NGINX, real SQLite and snapshot
files): list, snapshot only when consistent, restore only onto a stopped app and only from an
intact snapshot, remove refused while a release uses the volume."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.errors import Conflict, InvalidInput, NotFound
from kiln.model import AppKey
from tests.controller.world import World, eventually

WEB = AppKey("dev", "web")
SPEC = (
    "app: web\nimage: web:v1\nport: 8080\ninstances: 1\n"
    "deploy: {deadline: 30s, drain: 0s}\nstop_grace: 0s\n"
    "volumes: [{name: data, path: /var/lib/web}]\n"
)


def nothing(_done: int) -> None:
    pass


async def test_snapshot_and_restore_need_a_stopped_app_and_an_intact_snapshot(
    world: World, tmp_path: Path
) -> None:
    engine = world.engine
    await engine.deploy(SPEC, message="", who="ann")
    await eventually(lambda: len(world.running()) == 1)
    (view,) = await engine.list_volumes(WEB)
    assert (view.info.name, view.used_by) == ("data", [1])
    world.driver.volumes[WEB, "data"] = {"count": b"41"}

    with pytest.raises(Conflict, match="kiln stop dev/web"):
        await engine.snapshot_volume(WEB, "data", who="ann", progress=nothing)
    await engine.stop(WEB, who="ann")
    await eventually(lambda: not world.running())
    made = await engine.snapshot_volume(WEB, "data", who="ann", progress=nothing)
    assert made.consistency == "stopped" and made.size > 0
    tar = tmp_path / "snapshots" / "dev" / "web" / "data" / f"{made.id}.tar"
    assert tar.is_file()

    world.driver.volumes[WEB, "data"] = {"count": b"99"}
    await engine.restore_volume(WEB, "data", made.id, who="ann", progress=nothing)
    assert world.driver.volumes[WEB, "data"] == {"count": b"41"}

    tar.write_bytes(tar.read_bytes() + b"x")
    with pytest.raises(InvalidInput, match="corrupted"):
        await engine.restore_volume(WEB, "data", made.id, who="ann", progress=nothing)
    with pytest.raises(NotFound):
        await engine.restore_volume(
            WEB, "data", "20260101T000000Z-0000", who="ann", progress=nothing
        )
    with pytest.raises(Conflict, match="used by release 1"):
        await engine.remove_volume(WEB, "data", who="ann")
    inspected = await engine.inspect_volume(WEB, "data")
    assert [s.id for s in inspected.snapshots] == [made.id]


async def test_a_pre_snapshot_command_makes_a_running_app_consistent(world: World) -> None:
    spec = SPEC.replace(
        "path: /var/lib/web}", "path: /var/lib/web, pre_snapshot: [sh, -c, checkpoint]}"
    )
    await world.engine.deploy(spec, message="", who="ann")
    await eventually(lambda: len(world.running()) == 1)
    made = await world.engine.snapshot_volume(WEB, "data", who="ann", progress=nothing)
    assert made.consistency == "pre_snapshot"
    assert world.driver.exec_calls[-1][1] == ("sh", "-c", "checkpoint")


async def test_a_read_only_volume_is_copied_while_its_instances_run(world: World) -> None:
    spec = SPEC.replace("instances: 1", "instances: 2").replace(
        "path: /var/lib/web}", "path: /var/lib/web, read_only: true}"
    )
    await world.engine.deploy(spec, message="", who="ann")
    await eventually(lambda: len(world.running()) == 2)  # no writer: two instances may mount it
    made = await world.engine.snapshot_volume(WEB, "data", who="ann", progress=nothing)
    assert made.consistency == "read_only"
    assert world.driver.exec_calls == []  # nothing to quiesce
