"""The engine with an artifact repository (FakeRegistry), over fakes: the registry is started
and kept running, and releases pin images to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kiln.config import Settings
from kiln.config.file import FileSettings, RegistrySettings
from kiln.controller.engine import Engine
from kiln.drivers.fake import FakeDriver
from kiln.errors import Conflict, ImageNotFound, TemporaryFailure
from kiln.model.image import LocalImage
from kiln.registry.fake import FakeRegistry
from tests.controller.world import WEB, World, engine_over_fakes, eventually, running, spec


class RegistryWorld(World):
    """``linked``: the engine pushes into the fake registry; ``retain``: prune's retention.
    Both are applied before the one engine is built (an engine built and thrown away would
    leave its wiring on the shared fakes)."""

    def __init__(self, tmp_path: Path, *, linked: bool = False, retain: int = 10) -> None:
        self.registry = FakeRegistry()
        self.linked = linked
        self.retain = retain
        super().__init__(tmp_path)

    def new_engine(self) -> Engine:
        if self.linked and not isinstance(self.driver, LinkedDriver):
            linked = LinkedDriver(self.registry)
            linked.images.update(self.driver.images)
            self.driver = linked
        if self.settings.file.registry.retain_releases != self.retain:
            self.settings = Settings(
                home=self.settings.home,
                resync_seconds=self.settings.resync_seconds,
                file=FileSettings(registry=RegistrySettings(retain_releases=self.retain)),
            )
        return engine_over_fakes(
            self.settings, self.driver, self.router, self.health, self.registry
        )

    def event_kinds(self) -> list[str]:
        return [e.kind for e in self.store.list_events(key=None, after_id=0, limit=1000)]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[RegistryWorld]:
    async with running(RegistryWorld(tmp_path)) as w:
        yield w


async def test_the_registry_starts_with_kiln_and_is_restarted_when_it_exits(
    world: RegistryWorld,
) -> None:
    assert world.registry.running and world.registry.starts == 1
    world.registry.exit()
    await eventually(lambda: world.registry.running)
    assert world.registry.starts == 2
    await eventually(lambda: "registry.restarted" in world.event_kinds())


class LinkedDriver(FakeDriver):
    """The fake engine pushing into the fake registry, as Docker pushes into a real one."""

    def __init__(self, registry: FakeRegistry) -> None:
        super().__init__()
        self.registry = registry

    async def push_image(
        self, image: str, *, repository: str, tag: str, auth: tuple[str, str] | None
    ) -> str:
        digest = await super().push_image(image, repository=repository, tag=tag, auth=auth)
        self.registry.put(repository.split("/", 1)[1], digest, tag=tag)
        return digest


def pinned_world(tmp_path: Path, *, retain: int = 10) -> RegistryWorld:
    return RegistryWorld(tmp_path, linked=True, retain=retain)


@pytest.fixture
async def pinned(tmp_path: Path) -> AsyncIterator[RegistryWorld]:
    async with running(pinned_world(tmp_path)) as w:
        yield w


async def test_a_release_holds_the_registry_digest_of_an_image_built_on_the_engine(
    pinned: RegistryWorld,
) -> None:
    result = await pinned.engine.deploy(spec("web:v1"), message="", who="ann")
    digest = result.release.digest
    assert digest.startswith("registry.fake:5000/web@sha256:")
    assert result.release.image == "web:v1"  # what the user wrote stays visible
    assert pinned.driver.pushes == ["registry.fake:5000/web:v1"]
    await eventually(lambda: len(pinned.running()) == 3)
    assert {s.image for s in pinned.driver.started} == {digest}
    entry = pinned.store.images.get("web", "v1")
    assert entry is not None and digest.endswith(entry.digest)


async def test_deploying_the_same_image_again_pushes_nothing_and_makes_no_release(
    pinned: RegistryWorld,
) -> None:
    await pinned.engine.deploy(spec("web:v1"), message="", who="ann")
    again = await pinned.engine.deploy(spec("web:v1"), message="", who="ann")
    assert again.changed is False
    assert pinned.driver.pushes == ["registry.fake:5000/web:v1"]


class OnePushAtATime(LinkedDriver):
    """A push that takes a while (so others can start meanwhile) and refuses to run beside
    another push of the same tag, as a registry fails concurrent pushes of the same blobs."""

    def __init__(self, registry: FakeRegistry) -> None:
        super().__init__(registry)
        self.pushing: set[str] = set()
        self.release_push = asyncio.Event()
        self.looked_up = 0  # image_details calls: a deploy about to push (or to join a push)

    async def image_details(self, reference: str) -> LocalImage:
        self.looked_up += 1
        return await super().image_details(reference)

    async def push_image(
        self, image: str, *, repository: str, tag: str, auth: tuple[str, str] | None
    ) -> str:
        target = f"{repository}:{tag}"
        if target in self.pushing:
            raise TemporaryFailure(f"pushing {target} failed: 500 Internal Server Error")
        self.pushing.add(target)
        try:
            await self.release_push.wait()
            return await super().push_image(image, repository=repository, tag=tag, auth=auth)
        finally:
            self.pushing.discard(target)


async def test_apps_deployed_at_once_from_one_image_share_one_push(tmp_path: Path) -> None:
    world = pinned_world(tmp_path)
    world.driver = driver = OnePushAtATime(world.registry)
    driver.images.update({"web:v1": world.driver.add_image("web:v1")})
    world.engine = world.new_engine()
    await world.engine.start()
    try:
        apps = [f"web{n}" for n in range(8)]
        deploys = [
            asyncio.create_task(
                world.engine.deploy(
                    spec("web:v1").replace("app: web", f"app: {app}"), message="", who="ann"
                )
            )
            for app in apps
        ]
        # The first push is under way and every deploy has reached it.
        await eventually(lambda: driver.pushing and driver.looked_up == len(apps))
        driver.release_push.set()
        results = await asyncio.gather(*deploys)

        assert driver.pushes == ["registry.fake:5000/web:v1"]
        assert len({r.release.digest for r in results}) == 1
        assert results[0].release.digest.startswith("registry.fake:5000/web@sha256:")
        assert world.engine.plane.image_pushes == {}
        # A later deploy of the image finds it in the registry: no push either.
        later = await world.engine.deploy(
            spec("web:v1").replace("app: web", "app: later"), message="", who="ann"
        )
        assert later.release.digest == results[0].release.digest
        assert driver.pushes == ["registry.fake:5000/web:v1"]
    finally:
        await world.engine.close()


async def test_a_different_image_under_a_recorded_tag_is_refused_naming_both(
    pinned: RegistryWorld,
) -> None:
    first = await pinned.engine.deploy(spec("web:v1"), message="", who="ann")
    # Someone rebuilds web:v1 on the engine with other contents.
    pinned.driver.images["web:v1"] = pinned.driver.add_image("something else")
    with pytest.raises(Conflict) as refused:
        await pinned.engine.deploy(spec("web:v1"), message="", who="bob")
    message = refused.value.message
    assert first.release.digest.split("@")[1] in message
    assert pinned.driver.images["web:v1"] in message
    assert "tags are immutable" in message
    assert len(pinned.store.list_releases(WEB)) == 1  # nothing changed


async def test_an_engine_without_the_image_pulls_it_by_digest_before_starting(
    pinned: RegistryWorld,
) -> None:
    result = await pinned.engine.deploy(spec("web:v1", instances=2), message="", who="ann")
    digest = result.release.digest
    await eventually(lambda: len(pinned.running()) == 2)
    # The engine loses the image (a fresh machine): a replacement pulls it first.
    del pinned.driver.images[digest]
    pinned.driver.crash(pinned.running()[0].id)
    await eventually(lambda: len(pinned.running()) == 2)
    assert pinned.driver.pulls == [digest]
    await pinned.engine.plane.events.flush()  # the bus writes events in the background
    kinds = pinned.event_kinds()
    assert kinds.index("image.pulling") < kinds.index("image.pulled")


async def test_an_image_the_registry_lost_fails_the_start_with_a_clear_event(
    pinned: RegistryWorld,
) -> None:
    result = await pinned.engine.deploy(spec("web:v1", instances=1), message="", who="ann")
    await eventually(lambda: len(pinned.running()) == 1)
    digest = result.release.digest
    del pinned.driver.images[digest]
    del pinned.driver.remote[digest]
    pinned.driver.crash(pinned.running()[0].id)
    await eventually(lambda: "image.pull_failed" in pinned.event_kinds())
    failed = [
        e
        for e in pinned.store.list_events(key=WEB, after_id=0, limit=1000)
        if e.kind == "image.pull_failed"
    ]
    assert "does not have" in failed[0].reason and digest in failed[0].reason


async def test_deploying_a_digest_the_registry_does_not_hold_is_refused(
    pinned: RegistryWorld,
) -> None:
    missing = "registry.fake:5000/web@sha256:" + "ab" * 32
    with pytest.raises(ImageNotFound, match=r"has no registry\.fake:5000/web@sha256:abab"):
        await pinned.engine.deploy(spec(missing), message="", who="ann")
    assert pinned.store.get_app(WEB) is None


async def test_prune_keeps_the_retained_releases_and_whatever_still_runs(tmp_path: Path) -> None:
    w = pinned_world(tmp_path, retain=1)
    w.driver.add_image("web:v3")
    await w.engine.start()
    try:
        refs = []
        for tag in ("web:v1", "web:v2", "web:v3"):
            refs.append((await w.engine.deploy(spec(tag), message="", who="ann")).release.digest)
            await eventually(lambda: {i.release for i in w.running()} == {len(refs)})
        # An instance of release 1 that still runs (a legacy container kiln left alone).
        started = next(s for s in w.driver.started if s.release == 1)
        w.driver.plant(started, installation=None)
        result = await w.engine.prune_images(dry_run=False, who="ann")
        assert [v.tag for v in result.removed] == ["v2"]
        assert ("web", refs[1].split("@")[1]) not in w.registry.manifests
        assert ("web", refs[0].split("@")[1]) in w.registry.manifests
        assert w.registry.collected == 1
        assert w.store.images.get("web", "v2") is None
    finally:
        await w.engine.close()
