"""The engine: kiln's running control plane, as the API sees it. A thin facade: lifecycle
(start, close) plus the ``Service`` protocol, each method delegating to the module that does
the work (``commands``, ``reads``); ``root.py`` builds it.

On start the engine adopts what runs: NGINX by its pid file, the peer lists NGINX holds, and
every container labelled ``io.kiln.managed``; containers of unknown apps or releases are
removed by the same loops that converge everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from kiln.background import stop_tasks
from kiln.controller import (
    commands,
    images,
    observability,
    promotion,
    reads,
    rollouts,
    secrets,
    volumes,
)
from kiln.controller.drift import DriftChecker, DriftReport
from kiln.controller.executor import Executor
from kiln.controller.images import BuildResult, ImageView, PruneResult
from kiln.controller.promotion_views import ApprovalView, DiffView, PromotionView
from kiln.controller.quiet import QuietWatch
from kiln.controller.routes import sync_routes
from kiln.controller.runtime import ControlPlane
from kiln.controller.supervisors import (
    Supervisors,
    note_engine_host,
    note_other_installations,
    wake_known_apps,
)
from kiln.controller.views import (
    AppStatus,
    DeployResult,
    KeyRotation,
    LogRequest,
    ReleaseView,
    RolloutView,
    SecretSetResult,
    SecretView,
    VolumeView,
)
from kiln.drivers.base import InstanceStats
from kiln.errors import RouterUnavailable
from kiln.logs import ArchivedLine
from kiln.model import AppKey, Event, EventKind, ReleaseTraffic, Severity, Snapshot

AUTH_EVENT_EVERY = 10.0

T = TypeVar("T")


class Engine:
    def __init__(self, plane: ControlPlane, *, executor: Executor) -> None:
        self.plane = plane
        self.executor = executor
        self.supervisors = Supervisors(plane)
        self.drift_checker = DriftChecker(plane)
        self.quiet_watch = QuietWatch(plane)
        self._drift_task: asyncio.Task[None] | None = None
        self.shutdown_requested = asyncio.Event()
        self._auth_refusals = 0
        self._auth_event_at = -AUTH_EVENT_EVERY

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        plane = self.plane
        await plane.router.start()
        await self.supervisors.supervise_registry(first=True)
        for key, peers in (await plane.router.get_peers()).items():
            plane.observer.memory[key].routed = frozenset(peers)
        # Routes as the store gives them until each app's first round plans its own; a config
        # NGINX refuses never stops kiln from starting (the offending app's routes stay out).
        await sync_routes(plane, force=True)
        await self.supervisors.supervise_driver()  # an event if the engine does not answer
        plane.events.record(None, EventKind.KILN_STARTED, "kiln started; adopting what runs")
        await note_other_installations(plane)
        await note_engine_host(plane)
        await wake_known_apps(plane)
        self.supervisors.start()
        if plane.webhooks is not None:
            plane.webhooks.start()
        if plane.sampler is not None:
            plane.sampler.start()
        if plane.logs is not None:
            plane.logs.start()
        self._drift_task = asyncio.create_task(self.drift_checker.run(), name="drift checks")
        self.quiet_watch.start()

    async def close(self) -> None:
        """Stop the control plane (not NGINX, not the apps: they keep serving)."""
        plane = self.plane
        await self.supervisors.close()
        await self.quiet_watch.close()
        await stop_tasks(self._drift_task)
        await plane.loops.close()
        await plane.reads.close()
        await plane.route_applies.close()
        pushes = list(plane.image_pushes.values())  # a deploy's push its caller left behind
        for push in pushes:
            push.cancel()
        await asyncio.gather(*pushes, return_exceptions=True)
        await self.executor.drain_background()
        await plane.health.close()
        if plane.webhooks is not None:
            await plane.webhooks.close()
        if plane.sampler is not None:
            await plane.sampler.close()
        if plane.logs is not None:
            await plane.logs.close()
        if plane.memory is not None:
            await plane.memory.close()
        with contextlib.suppress(Exception):
            plane.events.record(
                None, EventKind.KILN_STOPPED, "kiln stopped; NGINX and the apps keep serving"
            )
        await plane.driver.close()
        await plane.router.close()  # the admin connection only: NGINX keeps serving
        if plane.registry is not None:
            await plane.registry.close()  # the HTTP client only: the registry keeps serving
        await plane.events.close()  # every queued event is written before the store closes
        await plane.store.close()

    async def _acked(self, result: T) -> T:
        """``result``, once the events of the change it reports are in the store: a command
        answers only what a crash a moment later cannot take back."""
        await self.plane.events.flush()
        return result

    async def request_shutdown(self) -> None:
        self.shutdown_requested.set()

    # --- Service: writes ----------------------------------------------------------------

    async def deploy(
        self, spec_text: str, *, message: str, who: str, environment: str | None = None
    ) -> DeployResult:
        return await self._acked(
            await commands.deploy(
                self.plane, spec_text, message=message, who=who, environment=environment
            )
        )

    async def rollback(
        self, key: AppKey, *, to: int | None, message: str, who: str
    ) -> DeployResult:
        return await self._acked(
            await commands.rollback(self.plane, key, to=to, message=message, who=who)
        )

    async def scale(self, key: AppKey, instances: int, *, who: str) -> AppStatus:
        return await self._acked(await commands.scale(self.plane, key, instances, who=who))

    async def stop(self, key: AppKey, *, who: str) -> AppStatus:
        return await self._acked(await commands.stop(self.plane, key, who=who))

    async def destroy(self, key: AppKey, *, who: str, wait: bool = False) -> None:
        await commands.destroy(self.plane, key, who=who, wait=wait)
        await self.plane.events.flush()

    async def set_secret(
        self, key: AppKey, name: str, value: bytes, *, deploy: bool, who: str
    ) -> SecretSetResult:
        result = await secrets.set_secret(self.plane, key, name, value, who=who)
        if not deploy:
            return result
        deployed = await commands.redeploy_secret(self.plane, key, name, who=who)
        return await self._acked(
            SecretSetResult(
                name=result.name,
                version=result.version,
                changed=result.changed,
                deploy=deployed,
                message=deployed.message,
            )
        )

    async def list_secrets(self, key: AppKey) -> list[SecretView]:
        return await secrets.list_secrets(self.plane, key)

    async def remove_secret(self, key: AppKey, name: str, *, who: str) -> None:
        await secrets.remove_secret(self.plane, key, name, who=who)
        await self.plane.events.flush()

    async def rotate_master_key(self, *, who: str) -> KeyRotation:
        return await self._acked(await secrets.rotate_master_key(self.plane, who=who))

    async def list_volumes(self, key: AppKey | None) -> list[VolumeView]:
        return [
            VolumeView(info=v, used_by=await volumes.used_by(self.plane, v.key, v.name))
            for v in await volumes.list_volumes(self.plane, key)
        ]

    async def inspect_volume(self, key: AppKey, name: str) -> VolumeView:
        info = await volumes.require_volume(self.plane, key, name)
        return VolumeView(
            info=info,
            used_by=await volumes.used_by(self.plane, key, name),
            snapshots=volumes.list_snapshots(self.plane, key, name),
        )

    async def remove_volume(self, key: AppKey, name: str, *, who: str) -> None:
        await volumes.remove_volume(self.plane, key, name, who=who)
        await self.plane.events.flush()

    async def snapshot_volume(
        self, key: AppKey, name: str, *, who: str, progress: Callable[[int], None]
    ) -> Snapshot:
        return await self._acked(
            await volumes.snapshot(self.plane, key, name, who=who, progress=progress)
        )

    async def restore_volume(
        self, key: AppKey, name: str, snapshot: str, *, who: str, progress: Callable[[int], None]
    ) -> Snapshot:
        return await self._acked(
            await volumes.restore(self.plane, key, name, snapshot, who=who, progress=progress)
        )

    async def promote(self, key: AppKey, *, full: bool, who: str) -> RolloutView:
        return await self._acked(await rollouts.promote(self.plane, key, full=full, who=who))

    async def pause(self, key: AppKey, *, who: str) -> RolloutView:
        return await self._acked(await rollouts.pause(self.plane, key, who=who))

    async def resume(self, key: AppKey, *, who: str) -> RolloutView:
        return await self._acked(await rollouts.resume(self.plane, key, who=who))

    async def abort(self, key: AppKey, *, who: str) -> RolloutView:
        return await self._acked(await rollouts.abort(self.plane, key, who=who))

    async def retry(self, key: AppKey, *, who: str) -> RolloutView:
        return await self._acked(await rollouts.retry(self.plane, key, who=who))

    async def build_image(
        self,
        context: bytes,
        *,
        repository: str,
        tag: str,
        labels: dict[str, str],
        dockerfile: str,
        who: str,
    ) -> BuildResult:
        return await self._acked(
            await images.build_image(
                self.plane,
                context,
                repository=repository,
                tag=tag,
                labels=labels,
                dockerfile=dockerfile,
                who=who,
            )
        )

    async def list_images(self, repository: str | None) -> list[ImageView]:
        return await images.list_images(self.plane, repository)

    async def prune_images(self, *, dry_run: bool, who: str) -> PruneResult:
        return await self._acked(await images.prune_images(self.plane, dry_run=dry_run, who=who))

    async def rollout_status(self, key: AppKey) -> RolloutView:
        return await rollouts.rollout_view(self.plane, key)

    async def promote_release(
        self,
        app: str,
        *,
        source_environment: str,
        target_environment: str,
        release: int | None,
        dry_run: bool,
        message: str,
        who: str,
    ) -> PromotionView:
        return await self._acked(
            await promotion.promote(
                self.plane,
                app,
                source_environment=source_environment,
                target_environment=target_environment,
                release=release,
                dry_run=dry_run,
                message=message,
                who=who,
            )
        )

    async def approve(
        self,
        app: str,
        *,
        target_environment: str,
        release: int,
        source_environment: str | None,
        note: str,
        who: str,
    ) -> ApprovalView:
        return await self._acked(
            await promotion.approve(
                self.plane,
                app,
                target_environment=target_environment,
                release=release,
                source_environment=source_environment,
                note=note,
                who=who,
            )
        )

    async def diff_releases(self, key: AppKey, left: int, right: int) -> DiffView:
        return await promotion.diff_releases(self.plane, key, left, right)

    async def diff_environments(self, app: str, left: str, right: str) -> DiffView:
        return await promotion.diff_environments(self.plane, app, left, right)

    # --- Service: reads -----------------------------------------------------------------

    async def status(self, key: AppKey) -> AppStatus:
        return await reads.app_status(self.plane, key)

    async def drift(self, key: AppKey | None) -> DriftReport:
        if key is not None:
            await self.plane.require_app(key)
        return await self.drift_checker.check(key)

    async def list_status(self) -> list[AppStatus]:
        return await reads.list_app_status(self.plane)

    async def releases(self, key: AppKey) -> list[ReleaseView]:
        return await reads.release_history(self.plane, key)

    async def release_counters(self) -> dict[AppKey, dict[int, ReleaseTraffic]]:
        try:
            return await self.plane.router.traffic()
        except RouterUnavailable:
            return {}

    async def instance_stats(self) -> dict[str, InstanceStats]:
        return dict(self.plane.sampler.latest) if self.plane.sampler is not None else {}

    async def events(
        self,
        *,
        key: AppKey | None,
        after_id: int = 0,
        limit: int = 100,
        kinds: frozenset[EventKind] | None = None,
    ) -> list[Event]:
        return await reads.stored_events(
            self.plane, key=key, after_id=after_id, limit=limit, kinds=kinds
        )

    async def metrics(self) -> bytes:
        return await observability.metrics_text(self.plane)

    def observe_api_request(self, route: str, method: str, status: int, seconds: float) -> None:
        if self.plane.metrics is not None:
            self.plane.metrics.api_requests.labels(route, method, str(status)).observe(seconds)
        if status in (401, 403):
            self._auth_failed(route, method, status)

    def _auth_failed(self, route: str, method: str, status: int) -> None:
        """One ``auth.failed`` event per AUTH_EVENT_EVERY seconds at most (a client retrying
        a bad token must not flood the event log); the audit log has every refusal."""
        now = time.monotonic()
        self._auth_refusals += 1
        if now - self._auth_event_at < AUTH_EVENT_EVERY:
            return
        count, self._auth_refusals, self._auth_event_at = self._auth_refusals, 0, now
        what = "no valid token" if status == 401 else "the token's role or environments"
        more = f" ({count} refused calls since the last such event)" if count > 1 else ""
        self.plane.events.record(
            None,
            EventKind.AUTH_FAILED,
            f"refused {method} {route} ({status}: {what}){more}; `kiln audit` has each one",
            severity=Severity.WARNING,
        )

    def follow_events(
        self, *, key: AppKey | None, after_id: int, kinds: frozenset[EventKind] | None = None
    ) -> AsyncIterator[Event]:
        return reads.follow_events(self.plane, key=key, after_id=after_id, kinds=kinds)

    def logs(
        self,
        key: AppKey,
        *,
        instance: str | None,
        follow: bool,
        tail: int | None,
        request: LogRequest | None = None,
    ) -> AsyncIterator[ArchivedLine]:
        return reads.app_logs(
            self.plane, key, instance=instance, follow=follow, tail=tail, request=request
        )
