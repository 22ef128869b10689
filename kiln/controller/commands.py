"""The write commands and their rules. A command checks its input, changes desired state in
the store, records why, and wakes the app's loop; the loop does the rest (invariant 8). Bad
input raises before anything is written (invariant 7).

Rules kept here: a deploy of what already runs is only a scale ("nothing changed"); a route
that clashes with another app's is refused; a rollback picks the last release whose rollout
succeeded and refuses one identical to what runs.
"""

from __future__ import annotations

import asyncio
import logging

from kiln.controller.images import pin_image
from kiln.controller.reads import app_status
from kiln.controller.routes import current_route_table, sync_routes
from kiln.controller.runtime import ControlPlane, utc_now
from kiln.controller.secrets import resolve_versions
from kiln.controller.views import AppStatus, DeployResult
from kiln.errors import Conflict, KilnError, SpecInvalid, TemporaryFailure
from kiln.model import AppKey, EventKind, Release, ReleaseOrigin, RolloutKind, RolloutState
from kiln.spec import AppSpec, base_for, check_runnable, for_environment, parse_spec, spec_hash

log = logging.getLogger("kiln.commands")

_DESTROY_TIMEOUT = 60.0


async def deploy(
    plane: ControlPlane,
    spec_text: str,
    *,
    message: str,
    who: str,
    environment: str | None = None,
) -> DeployResult:
    # Parsed in a worker thread: a large or hostile spec must not stall every app's loop.
    written = await asyncio.to_thread(parse_spec, spec_text)
    # The release runs the spec as its environment sees it (its `environments:` entry applied)
    # and keeps the spec as written, which a promotion applies the next environment's to.
    base = base_for(written, environment or written.environment)
    spec = for_environment(base)
    key = AppKey(spec.environment, spec.app)
    versions = await resolve_versions(plane, key, spec)
    digest = (await pin_image(plane, spec.image, key=key, who=who)).reference
    return await create_release(
        plane,
        spec,
        base_spec=base,
        image=spec.image,
        digest=digest,
        message=message,
        who=who,
        origin=ReleaseOrigin.DEPLOY,
        rollback_of=None,
        secret_versions=versions,
    )


async def redeploy_secret(plane: ControlPlane, key: AppKey, name: str, *, who: str) -> DeployResult:
    """The target release again with the secret versions of now (``kiln secret set --deploy``)."""
    app = await plane.require_app(key)
    if app.target_release is None:
        raise Conflict(f"{key} has no release to deploy the secret with: `kiln deploy` it")
    current = await plane.store.get_release(key, app.target_release)
    if not any(use.name == name for use in current.spec.secrets):
        raise Conflict(
            f"release {current.number} of {key} does not use secret {name}: name it under"
            " secrets: in kiln.yaml and `kiln deploy`"
        )
    spec = current.spec.model_copy(update={"instances": app.scale})
    return await create_release(
        plane,
        spec,
        image=current.image,
        digest=current.digest,
        message=f"secret {name} changed",
        who=who,
        origin=ReleaseOrigin.DEPLOY,
        rollback_of=None,
        secret_versions=await resolve_versions(plane, key, spec),
    )


async def rollback(
    plane: ControlPlane, key: AppKey, *, to: int | None, message: str, who: str
) -> DeployResult:
    store = plane.store
    app = await plane.require_app(key)
    warm_until = app.warm_until
    if (
        app.warm_release is not None
        and warm_until is not None
        and plane.clock() < warm_until
        and to in (None, app.warm_release)
        and not app.stopped
    ):
        return await _switch_back(plane, key, app.warm_release, who=who)
    releases = await store.list_releases(key)
    current = app.target_release
    if to is None:
        succeeded = {
            r.to_release
            for r in await store.list_rollouts(key)
            if r.state is RolloutState.SUCCEEDED
        }
        earlier = [r for r in releases if current is None or r.number < current]
        good = [r for r in earlier if r.number in succeeded]
        choice = (good or earlier)[-1] if (good or earlier) else None
        if choice is None:
            raise Conflict(f"{key} has no release before {current} to roll back to")
    else:
        choice = await store.get_release(key, to)
    current_release = await store.get_release(key, current) if current else None
    if (
        current_release is not None
        and not app.stopped
        and current_release.digest == choice.digest
        and current_release.spec_hash == choice.spec_hash
        and current_release.secret_versions == choice.secret_versions
    ):
        raise Conflict(
            f"{key} already runs release {current}, identical to release {choice.number}"
        )
    digest = (await pin_image(plane, choice.digest, key=key, who=who)).reference
    spec = choice.spec.model_copy(update={"instances": app.scale})
    return await create_release(
        plane,
        spec,
        image=choice.image,
        digest=digest,
        message=message or f"rollback to release {choice.number}",
        who=who,
        origin=ReleaseOrigin.ROLLBACK,
        rollback_of=choice.number,
        base_spec=choice.base_spec,
        # The versions that release ran with: a rollback brings the old secret values back.
        secret_versions=dict(choice.secret_versions),
    )


async def _switch_back(plane: ControlPlane, key: AppKey, warm: int, *, who: str) -> DeployResult:
    """Inside the rollback window the previous release still runs and is routable: going back
    to it is a router switch, not a new release with new instances."""
    release = await plane.store.get_release(key, warm)
    rollout = await plane.store.start_rollout(
        key,
        to_release=warm,
        strategy=release.spec.deploy.strategy,
        kind=RolloutKind.SWITCH_BACK,
        deadline_seconds=release.spec.deploy.deadline,
        now=plane.clock(),
    )
    plane.events.record(
        key,
        EventKind.ROLLOUT_ROLLBACK,
        f"{who} rolled back to release {warm} inside its rollback window: traffic switches back "
        "to its running instances",
        release=warm,
    )
    plane.loops.wake(key)
    return DeployResult(
        release=release,
        rollout=rollout,
        changed=True,
        message=f"release {warm} was kept warm: traffic switches back to it, no new instance",
    )


async def create_release(
    plane: ControlPlane,
    spec: AppSpec,
    *,
    image: str,
    digest: str,
    message: str,
    who: str,
    origin: ReleaseOrigin,
    rollback_of: int | None,
    base_spec: AppSpec | None = None,
    secret_versions: dict[str, int] | None = None,
) -> DeployResult:
    store, events = plane.store, plane.events
    key = AppKey(spec.environment, spec.app)
    if secret_versions is None:
        # A promotion: the secrets of the environment it goes to, by name (never another
        # environment's values).
        secret_versions = await resolve_versions(plane, key, spec)
    hashed = spec_hash(spec)
    app = await store.get_app(key)
    if app is not None and app.target_release is not None and not app.stopped:
        current = await store.get_release(key, app.target_release)
        if (
            current.digest == digest
            and current.spec_hash == hashed
            and current.secret_versions == secret_versions
            and origin is ReleaseOrigin.DEPLOY
            # Another environment's overrides changed: a new release, so that its promotion
            # carries them (a release keeps the spec as written).
            and (base_spec is None or current.base == base_spec)
        ):
            # Nothing changed: at most the instance count, which needs no new release.
            if app.scale != spec.instances:
                await store.set_scale(key, spec.instances, now=plane.clock())
                events.record(
                    key, EventKind.APP_SCALED, f"{who} scaled to {spec.instances} (spec unchanged)"
                )
                plane.loops.wake(key)
            return DeployResult(
                release=current,
                rollout=await store.active_rollout(key),
                changed=False,
                message=f"release {current.number} already runs this image, spec and secrets",
            )
    # A spec this engine's host can never run is refused now, not retried until its deadline.
    problems = check_runnable(spec, await plane.driver.host_limits())
    if problems:
        raise SpecInvalid(problems)
    # A route clash is an input error: check it before anything is written.
    await current_route_table(plane, with_release=_probe_release(key, spec, digest, hashed))
    if app is None:
        # A destroyed app of this name may still be removing its instances: release numbers
        # start again at 1, so its containers would pass for the new release's.
        await instances_gone(plane, key)
    release, rollout = await store.create_release(
        key,
        spec=spec,
        image=image,
        digest=digest,
        spec_hash=hashed,
        created_by=who,
        message=message,
        origin=origin,
        rollback_of=rollback_of,
        scale=spec.instances,
        deadline_seconds=spec.deploy.deadline,
        now=plane.clock(),
        base_spec=base_spec,
        secret_versions=secret_versions,
    )
    what = f"rollback to release {rollback_of}" if rollback_of else f"image {image}"
    if secret_versions:
        what += ", secrets " + ", ".join(f"{n} v{v}" for n, v in sorted(secret_versions.items()))
    events.record(
        key,
        EventKind.RELEASE_CREATED,
        f"release {release.number} created by {who}: {what}" + (f" — {message}" if message else ""),
        release=release.number,
    )
    events.record(
        key,
        EventKind.ROLLOUT_ROLLBACK if rollback_of else EventKind.ROLLOUT_STARTED,
        f"{spec.deploy.strategy.value} rollout "
        + (f"from release {rollout.from_release} " if rollout.from_release else "")
        + f"to release {release.number}, {spec.instances} instance(s), "
        f"deadline {spec.deploy.deadline:g}s",
        release=release.number,
    )
    # The app's loop moves its routes when the new release takes traffic (level-based).
    plane.loops.wake(key)
    return DeployResult(release=release, rollout=rollout, changed=True)


async def scale(plane: ControlPlane, key: AppKey, instances: int, *, who: str) -> AppStatus:
    if instances < 0:
        raise KilnError(f"instances must be ≥ 0, got {instances}")
    app = await plane.require_app(key)
    await plane.store.set_scale(key, instances, now=plane.clock())
    if app.stopped and instances > 0:
        await plane.store.set_stopped(key, False, now=plane.clock())
    plane.events.record(
        key, EventKind.APP_SCALED, f"{who} scaled {key} from {app.scale} to {instances}"
    )
    plane.loops.wake(key)
    return await app_status(plane, key)


async def stop(plane: ControlPlane, key: AppKey, *, who: str) -> AppStatus:
    await plane.require_app(key)
    await plane.store.set_stopped(key, True, now=plane.clock())
    plane.events.record(key, EventKind.APP_STOPPED, f"{who} stopped {key}; its history is kept")
    plane.loops.wake(key)
    return await app_status(plane, key)


async def destroy(plane: ControlPlane, key: AppKey, *, who: str, wait: bool = False) -> None:
    """Forget the app and take its routes out of NGINX now, so its traffic stops; its loop
    drains, stops and removes the instances in the background (level-based: the loop of a key
    the store no longer knows removes what runs under it, after a restart too), and forgets its
    peer list once they are gone. ``wait``: also until its instances are gone."""
    await plane.require_app(key)
    await plane.store.delete_app(
        key, keep_releases=await _legacy_releases(plane, key), now=plane.clock()
    )
    plane.events.record(
        key,
        EventKind.APP_DESTROYED,
        f"{who} destroyed {key}; its routes are gone, its instances are removed in the background",
    )
    # The route table is every app the store knows (planned_routes): this one's leave it now.
    await sync_routes(plane)
    plane.loops.wake(key)
    if wait:
        await instances_gone(plane, key)


async def _legacy_releases(plane: ControlPlane, key: AppKey) -> set[int]:
    """The releases of ``key`` that legacy containers (no installation id) run: the store keeps
    them aside when the app goes, so the forgotten app's loop removes those containers too."""
    try:
        listed = await plane.driver.list_instances(key)
    except KilnError as exc:  # the engine is away: this kiln's own containers still go
        log.warning("destroy %s: legacy containers not looked for: %s", key, exc)
        return set()
    await plane.load_releases([i for i in listed if i.legacy])
    return {
        i.release
        for i in listed
        if i.legacy and plane.store.cached_release(key, i.release) is not None
    }


async def instances_gone(plane: ControlPlane, key: AppKey) -> None:
    """Until the engine runs no instance of ``key``: this installation's and the legacy ones of
    its releases (a legacy container of an unknown release is left alone, never removed);
    ``TemporaryFailure`` after a minute."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _DESTROY_TIMEOUT
    while remaining := [
        i
        for i in await plane.driver.list_instances(key)
        if not i.legacy or plane.store.cached_release(key, i.release) is not None
    ]:
        if loop.time() >= deadline:
            raise TemporaryFailure(
                f"{len(remaining)} instance(s) of {key} still running after "
                f"{_DESTROY_TIMEOUT:g}s; kiln keeps removing them (`kiln events {key}` says why)"
            )
        await asyncio.sleep(0.1)


def _probe_release(key: AppKey, spec: AppSpec, digest: str, hashed: str) -> Release:
    """A throwaway release used only to check the route table before anything is written."""
    return Release(
        key=key,
        number=1,
        image=spec.image,
        digest=digest,
        spec=spec,
        spec_hash=hashed,
        created_at=utc_now(),
        created_by="",
        message="",
    )
