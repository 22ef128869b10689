"""Promotion over the engine with fakes (FakeDriver, FakeRouter, FakeHealth, real SQLite) and a
clock the test moves: gates refuse with their reasons, a promotion keeps the digest and applies
only the target's overrides, a canary environment rolls out as a canary, bad input changes
nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kiln.config import Settings
from kiln.config.file import EnvironmentGate, EnvironmentsSettings, FileSettings
from kiln.controller.engine import Engine
from kiln.controller.root import assemble_engine
from kiln.drivers.fake import FakeDriver
from kiln.errors import GateRefused, InvalidInput, NotFound
from kiln.model import AppKey, ReleaseOrigin, RolloutState
from kiln.router.fake import FakeRouter
from kiln.spec import Strategy
from kiln.store.sqlite import SqliteStore
from tests.controller.fake_health import FakeHealth
from tests.controller.world import eventually

STAGING = AppKey("staging", "web")
PRODUCTION = AppKey("production", "web")

SPEC = """
app: web
image: web:v1
port: 8080
instances: 2
env: {LOG_LEVEL: info, FEATURE: "on"}
deploy: {deadline: 30s, drain: 0s}
stop_grace: 0s
environments:
  production:
    instances: 3
    env: {LOG_LEVEL: warn}
    deploy: {strategy: canary, steps: [{weight: 50}], drain: 0s}
"""


class World:
    def __init__(self, tmp_path: Path, gates: dict[str, EnvironmentGate]) -> None:
        environments = EnvironmentsSettings(gates=gates)
        self.settings = Settings(
            home=tmp_path, resync_seconds=0.2, file=FileSettings(environments=environments)
        )
        self.store = SqliteStore(tmp_path / "kiln.db")
        self.driver = FakeDriver()
        self.router = FakeRouter()
        self.health = FakeHealth()
        self.driver.add_image("web:v1")
        self.driver.add_image("web:v2")
        self.health.healthy_releases = {1, 2, 3}
        self.offset = timedelta()
        self.engine: Engine = assemble_engine(
            settings=self.settings,
            # Its own connection: the engine's is guarded against the test's (loop) thread;
            # the test reads the file through self.store, as a second process would.
            store=SqliteStore(self.settings.db_path),
            driver=self.driver,
            router=self.router,
            health=self.health,  # type: ignore[arg-type]
            clock=lambda: datetime.now(UTC) + self.offset,
        )
        self.health.bind(self.engine.plane.wake_app_of)

    async def deploy_staging(self, text: str = SPEC) -> None:
        result = await self.engine.deploy(text, message="", who="ci", environment="staging")
        number = result.release.number
        await eventually(lambda: self._settled(STAGING, number))

    def _settled(self, key: AppKey, number: int) -> bool:
        app = self.store.get_app(key)
        return (
            app is not None
            and app.stable_release == number
            and self.store.active_rollout(key) is None
            and (plan := self.engine.plane.last_plans.get(key)) is not None
            and plan.ready >= app.scale
        )

    async def promote(self, *, dry_run: bool = False, release: int | None = None):  # type: ignore[no-untyped-def]
        return await self.engine.promote_release(
            "web",
            source_environment="staging",
            target_environment="production",
            release=release,
            dry_run=dry_run,
            message="",
            who="ann",
        )


async def _world(tmp_path: Path, gates: dict[str, EnvironmentGate]) -> World:
    world = World(tmp_path, gates)
    await world.engine.start()
    return world


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await _world(tmp_path, {})
    try:
        yield w
    finally:
        await w.engine.close()


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[World]:
    w = await _world(tmp_path, {"production": EnvironmentGate(min_soak=600, approval="required")})
    try:
        yield w
    finally:
        await w.engine.close()


async def test_deploy_to_an_environment_applies_its_overrides_only(world: World) -> None:
    await world.deploy_staging()
    release = world.store.get_release(STAGING, 1)
    assert release.spec.environment == "staging"
    assert release.spec.instances == 2
    assert release.spec.env == {"LOG_LEVEL": "info", "FEATURE": "on"}
    assert release.spec.deploy.strategy is Strategy.ROLLING
    assert release.base_spec is not None and release.base_spec.environments is not None


async def test_promotion_keeps_the_digest_and_applies_only_the_targets_overrides(
    world: World,
) -> None:
    await world.deploy_staging()
    source = world.store.get_release(STAGING, 1)

    view = await world.promote()

    assert view.changed and view.release is not None
    promoted = world.store.get_release(PRODUCTION, view.release.number)
    assert promoted.digest == source.digest and promoted.image == source.image
    assert promoted.origin is ReleaseOrigin.PROMOTION
    assert "promoted from staging/web release 1" in promoted.message
    changed = {c.path for c in view.diff.changes}
    assert promoted.spec.instances == 3
    assert promoted.spec.env == {"LOG_LEVEL": "warn", "FEATURE": "on"}
    # Everything else is the source's, field for field.
    same = promoted.spec.model_dump(exclude={"environment", "instances", "env", "deploy"})
    assert same == source.spec.model_dump(exclude={"environment", "instances", "env", "deploy"})
    assert changed == set()  # nothing ran in production before: no field-by-field diff
    assert view.diff.digest_changed


async def test_promotion_to_a_canary_environment_rolls_out_as_a_canary(world: World) -> None:
    # production runs release 1 first (rolling), so the promotion has a stable to canary from.
    await world.deploy_staging()
    first = await world.promote()
    assert first.release is not None
    await eventually(lambda: world._settled(PRODUCTION, 1))
    v2 = SPEC.replace("web:v1", "web:v2")
    await world.deploy_staging(v2)

    view = await world.promote()

    assert view.release is not None and view.rollout is not None
    assert view.rollout.strategy is Strategy.CANARY
    assert view.release.spec.deploy.strategy is Strategy.CANARY
    # The canary takes its first step (50%) and waits for `kiln promote` (no pause).
    await eventually(
        lambda: (
            (r := world.store.active_rollout(PRODUCTION)) is not None
            and r.progress.step_ready_at is not None
        )
    )
    assert view.diff.digest_changed
    assert [c.path for c in view.diff.changes] == ["image"]  # same spec, a new image


async def test_each_gate_refuses_with_its_reason_and_nothing_changes(gated: World) -> None:
    await gated.deploy_staging()
    with pytest.raises(GateRefused) as refused:
        await gated.promote()
    message = refused.value.message
    assert "soak: live and healthy" in message and "of the 10m production requires" in message
    assert (
        "approval: production requires an approval: `kiln approve web --env production "
        "--release 1`" in message
    )
    assert "serving" not in message and "rollout:" not in message
    assert gated.store.get_app(PRODUCTION) is None  # nothing written

    # The dry run lists every gate with its numbers and changes nothing either.
    dry = await gated.promote(dry_run=True)
    assert {g.name: g.passed for g in dry.gates} == {
        "serving": True,
        "rollout": True,
        "analysis": True,
        "soak": False,
        "approval": False,
    }
    assert not dry.changed and gated.store.get_app(PRODUCTION) is None

    await gated.engine.approve(
        "web",
        target_environment="production",
        release=1,
        source_environment=None,
        note="qa ok",
        who="lead",
    )
    with pytest.raises(GateRefused) as still:
        await gated.promote()
    assert "approval" not in still.value.message and "soak" in still.value.message

    gated.offset = timedelta(minutes=11)  # the soak is over
    view = await gated.promote()
    assert view.changed
    assert next(g for g in view.gates if g.name == "approval").detail.startswith("approved by lead")


async def test_a_release_that_does_not_serve_is_refused(world: World) -> None:
    await world.deploy_staging()
    world.health.healthy_releases = {1}
    await world.engine.deploy(
        SPEC.replace("web:v1", "web:v2").replace("30s", "300ms"),
        message="",
        who="ci",
        environment="staging",
    )
    await eventually(lambda: world.store.list_rollouts(STAGING)[-1].state is RolloutState.FAILED)
    with pytest.raises(GateRefused) as refused:
        await world.promote(release=2)
    assert "serving: release 2 is not what staging/web runs now" in refused.value.message
    assert "rollout: its rollout is failed" in refused.value.message
    assert world.store.get_app(PRODUCTION) is None


async def test_promoting_what_already_runs_is_a_clear_no_op(world: World) -> None:
    await world.deploy_staging()
    await world.promote()
    again = await world.promote()
    assert not again.changed
    assert "nothing to promote: production/web already runs release 1" in again.message
    assert len(world.store.list_releases(PRODUCTION)) == 1


async def test_bad_input_changes_nothing(world: World) -> None:
    await world.deploy_staging()
    with pytest.raises(
        InvalidInput, match=r"takes releases from staging .*: promote dev → staging first"
    ):
        await world.engine.promote_release(
            "web",
            source_environment="dev",
            target_environment="production",
            release=None,
            dry_run=False,
            message="",
            who="t",
        )
    with pytest.raises(InvalidInput, match=r"promotion goes forward"):
        await world.engine.promote_release(
            "web",
            source_environment="staging",
            target_environment="dev",
            release=None,
            dry_run=False,
            message="",
            who="t",
        )
    with pytest.raises(NotFound, match=r"not one of the environments"):
        await world.engine.promote_release(
            "web",
            source_environment="staging",
            target_environment="prod",
            release=None,
            dry_run=False,
            message="",
            who="t",
        )
    with pytest.raises(NotFound):
        await world.promote(release=9)
    assert world.store.get_app(PRODUCTION) is None
    assert world.store.list_approvals(PRODUCTION) == []


async def test_diff_of_two_releases_and_of_two_environments(world: World) -> None:
    await world.deploy_staging()
    await world.deploy_staging(SPEC.replace("web:v1", "web:v2").replace("info", "debug"))
    diff = await world.engine.diff_releases(STAGING, 1, 2)
    assert diff.digest_changed
    assert [(c.path, c.before, c.after) for c in diff.changes] == [
        ("image", "web:v1", "web:v2"),
        ("env.LOG_LEVEL", "info", "debug"),
    ]
    await world.promote()
    across = await world.engine.diff_environments("web", "staging", "production")
    assert not across.digest_changed
    paths = [c.path for c in across.changes]
    assert paths[:3] == ["environment", "env.LOG_LEVEL", "instances"]
    assert "deploy.strategy" in paths and across.secrets == []
