"""The read views: the store's desired state combined with what each app's last round saw
and planned (``ControlPlane.last_instances`` / ``last_plans``), the health monitor's verdicts
and the router memory. Reads change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator

from kiln.controller.runtime import ControlPlane
from kiln.controller.views import AppStatus, InstanceView, LogRequest, ReleaseView
from kiln.errors import NotFound
from kiln.logs import ArchivedLine, LogQuery, access_history, follow_access
from kiln.model import AppKey, AppRecord, Event, EventKind, Rollout


async def app_status(plane: ControlPlane, key: AppKey) -> AppStatus:
    """``NotFound`` for an unknown app."""
    app = await plane.require_app(key)
    return await _status(plane, app, await plane.store.active_rollout(key))


async def list_app_status(plane: ControlPlane) -> list[AppStatus]:
    # Two reads of the store for every app at once, not one per app: each store call is a
    # trip to the store's thread, and a hundred of them queue behind the rounds' reads.
    apps = await plane.store.list_apps()
    rollouts = await plane.store.active_rollouts()
    return [await _status(plane, app, rollouts.get(app.key)) for app in apps]


async def _status(plane: ControlPlane, app: AppRecord, rollout: Rollout | None) -> AppStatus:
    key = app.key
    await plane.load_releases(plane.last_instances.get(key, []))
    memory = plane.observer.memory.get(key)
    routed = {p.instance_id for p in memory.routed} if memory else set()
    retiring = memory.retiring_since if memory else {}
    views = []
    for instance in plane.last_instances.get(key, []):
        health = plane.health_of(instance)
        views.append(
            InstanceView(
                id=instance.id,
                release=instance.release,
                container_id=instance.container_id,
                status=instance.status.value,
                ready=health.ready and instance.running,
                in_router=instance.id in routed,
                draining=instance.id in retiring and instance.running,
                address=str(instance.address) if instance.address else None,
                started_at=instance.started_at,
                exit_code=instance.exit_code,
                last_error=health.last_error,
            )
        )
    last_plan = plane.last_plans.get(key)
    ready = last_plan.ready if last_plan else 0
    if app.stopped:
        state = "stopped"
    elif app.target_release is None:
        state = "failed" if app.stable_release is None else "empty"
    elif rollout is not None:
        state = "deploying"
    elif ready < app.scale:
        state = "degraded"
    else:
        state = "running"
    message = last_plan.summary if last_plan else ""
    if error := plane.loops.last_error.get(key):
        message = f"{message} — last error: {error}" if message else error
    urls = []
    number = app.target_release or app.stable_release
    if number is not None:
        release = await plane.release_or_none(key, number)
        if release is not None:
            for route in release.spec.effective_routes():
                host = route.host or plane.settings.http_host
                urls.append(f"http://{host}:{plane.settings.http_port}{route.path}")
    return AppStatus(
        key=key,
        state=state,
        scale=app.scale,
        stopped=app.stopped,
        target_release=app.target_release,
        stable_release=app.stable_release,
        ready=ready,
        instances=sorted(views, key=lambda v: (v.release, v.id)),
        rollout=rollout,
        urls=urls,
        message=message,
        quiet=key in plane.quiet_apps,
    )


async def release_history(plane: ControlPlane, key: AppKey) -> list[ReleaseView]:
    """Oldest first, each with the outcome of its latest rollout."""
    app = await plane.require_app(key)
    # Oldest first, so the latest rollout to each release wins.
    latest = {rollout.to_release: rollout for rollout in await plane.store.list_rollouts(key)}
    views = []
    for release in await plane.store.list_releases(key):
        outcome = latest.get(release.number)
        if outcome is None:
            result, reason = "", ""
        else:
            result, reason = outcome.state.value, outcome.reason
        if release.number == app.target_release and result == "succeeded" and not app.stopped:
            result = "current"
        views.append(ReleaseView(release=release, result=result, result_reason=reason))
    return views


async def stored_events(
    plane: ControlPlane,
    *,
    key: AppKey | None,
    after_id: int,
    limit: int,
    kinds: frozenset[EventKind] | None = None,
) -> list[Event]:
    return await plane.store.list_events(key=key, after_id=after_id, limit=limit, kinds=kinds)


async def follow_events(
    plane: ControlPlane,
    *,
    key: AppKey | None,
    after_id: int,
    kinds: frozenset[EventKind] | None = None,
) -> AsyncIterator[Event]:
    async for event in plane.events.follow(key=key, after_id=after_id, kinds=kinds):
        yield event


async def app_logs(
    plane: ControlPlane,
    key: AppKey,
    *,
    instance: str | None,
    follow: bool,
    tail: int | None,
    request: LogRequest | None = None,
) -> AsyncIterator[ArchivedLine]:
    """The app's kept logs (instances that are gone included), merged in time order; with
    ``follow``, new lines too, from instances that start later. ``request.router``: NGINX's
    access lines of the app instead."""
    await plane.require_app(key)
    request = request or LogRequest()
    keeper = plane.logs
    if instance is not None:
        known = keeper.archive.instances(key) if keeper is not None else set()
        live = await plane.driver.list_instances(key)
        matching = [i.id for i in live if i.id == instance or i.container_id.startswith(instance)]
        if instance in known:
            matching = [instance]
        if not matching:
            raise NotFound(
                f"no instance {instance} in {key}; `kiln ps {key.app}` lists the running ones "
                f"and `kiln logs {key.app}` shows every kept one"
            )
        instance = matching[0]
    query = LogQuery(
        release=request.release, instance=instance, since=request.since, grep=request.grep
    )
    if request.router:
        access = plane.router.log_files().get("access")
        if access is None:
            return
        keep = plane.settings.file.logs.router_keep
        if follow:
            async for line in follow_access(access, key, query, keep=keep, tail=tail):
                yield line
        else:
            for line in access_history(access, key, query, keep=keep, tail=tail):
                yield line
        return
    if keeper is None:
        return
    if follow:
        async for line in keeper.archive.follow(key, query, tail=tail):
            yield line
    else:
        for line in keeper.archive.history(key, query, tail=tail):
            yield line
