"""What the API asks of the running kiln: the ``Service`` protocol.

``kiln.controller.engine.Engine`` implements it by delegating to ``commands`` (writes) and
``reads`` (reads) over the shared ``ControlPlane``. Writes go to the store (desired state) and
wake the app's loop; reads combine the store with what the loops last observed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Protocol

from kiln.controller.drift import DriftReport
from kiln.controller.images import BuildResult, ImageView, PruneResult
from kiln.controller.promotion_views import ApprovalView, DiffView, PromotionView
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
from kiln.logs import ArchivedLine
from kiln.model import AppKey, Event, EventKind, ReleaseTraffic, Snapshot


class Service(Protocol):
    async def deploy(
        self, spec_text: str, *, message: str, who: str, environment: str | None = None
    ) -> DeployResult:
        """Validate the spec (``SpecInvalid``), pin its image (``ImageNotFound``), append a
        release and start its rollout. Same digest and spec hash as the target: only the
        scale is applied, ``changed`` is False. ``environment`` deploys into that environment
        instead of the spec's own; its ``environments:`` entry applies either way."""

    async def rollback(
        self, key: AppKey, *, to: int | None, message: str, who: str
    ) -> DeployResult:
        """Inside the rollback window of a blue-green or canary promotion (``to`` omitted or
        the warm release): traffic switches back to the warm release's running instances, no
        new release. Otherwise a new release that reuses release ``to``'s digest and spec
        (default: the release before the current one). ``NotFound`` / ``Conflict`` when there
        is nothing to go back to."""

    async def scale(self, key: AppKey, instances: int, *, who: str) -> AppStatus: ...

    async def stop(self, key: AppKey, *, who: str) -> AppStatus:
        """Zero instances, history kept; ``deploy`` or ``scale`` starts it again."""

    async def destroy(self, key: AppKey, *, who: str, wait: bool = False) -> None:
        """Forget the app and drop its routes now; its instances are stopped and removed in the
        background (``wait``: until they are gone, ``TemporaryFailure`` after a minute)."""

    async def set_secret(
        self, key: AppKey, name: str, value: bytes, *, deploy: bool, who: str
    ) -> SecretSetResult:
        """A new version of the secret (none when the value equals the newest). No running
        instance changes; with ``deploy`` the target release is released again with it."""

    async def list_secrets(self, key: AppKey) -> list[SecretView]:
        """Names, newest versions, who set them when; never a value."""

    async def remove_secret(self, key: AppKey, name: str, *, who: str) -> None:
        """Every version goes. ``Conflict`` while a serving release pins it."""

    async def rotate_master_key(self, *, who: str) -> KeyRotation:
        """Re-encrypt every secret under a new master key; running instances are untouched."""

    async def list_volumes(self, key: AppKey | None) -> list[VolumeView]:
        """This installation's volumes (one app's with ``key``) and the releases using each."""

    async def inspect_volume(self, key: AppKey, name: str) -> VolumeView:
        """One volume with its snapshots. ``NotFound``."""

    async def remove_volume(self, key: AppKey, name: str, *, who: str) -> None:
        """Delete it and its data. ``Conflict`` while a release the app may run mounts it."""

    async def snapshot_volume(
        self, key: AppKey, name: str, *, who: str, progress: Callable[[int], None]
    ) -> Snapshot:
        """A consistent copy under $KILN_HOME/snapshots (the app stopped, or the volume's
        pre_snapshot command run first; else ``Conflict``); ``progress(bytes)`` as it goes."""

    async def restore_volume(
        self, key: AppKey, name: str, snapshot: str, *, who: str, progress: Callable[[int], None]
    ) -> Snapshot:
        """Replace the volume's files with a snapshot (checksum checked first). The app must
        be stopped (``Conflict``); a corrupted snapshot is ``InvalidInput``."""

    async def promote(self, key: AppKey, *, full: bool, who: str) -> RolloutView:
        """Canary: the next step (``full``: all traffic now); blue-green: switch all traffic.
        ``Conflict`` without a canary or blue-green rollout in progress."""

    async def pause(self, key: AppKey, *, who: str) -> RolloutView:
        """Hold the rollout where it is (traffic stays as it is). ``Conflict`` as promote."""

    async def resume(self, key: AppKey, *, who: str) -> RolloutView: ...

    async def abort(self, key: AppKey, *, who: str) -> RolloutView:
        """Traffic back to the stable release at once; the new release stays for inspection
        until the next deploy. ``Conflict`` without a rollout in progress."""

    async def retry(self, key: AppKey, *, who: str) -> RolloutView:
        """A failed or aborted rollout again from its first step. ``Conflict`` otherwise."""

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
        """A release in the target environment with the source release's exact digest and
        base spec (the target's overrides applied), rolled out with the target's strategy.
        ``InvalidInput`` for environments out of order, ``GateRefused`` listing every failing
        gate; ``dry_run`` only evaluates. Already running there: ``changed`` is False."""

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
        """Approve release ``release`` of the environment before ``target_environment``."""

    async def diff_releases(self, key: AppKey, left: int, right: int) -> DiffView: ...

    async def diff_environments(self, app: str, left: str, right: str) -> DiffView:
        """What ``app`` runs in ``left`` against what it runs in ``right``."""

    async def rollout_status(self, key: AppKey) -> RolloutView:
        """The rollout in progress (or the last one): step, groups, shares, verdicts."""

    async def status(self, key: AppKey) -> AppStatus:
        """``NotFound`` for an unknown app."""

    async def list_status(self) -> list[AppStatus]: ...

    async def drift(self, key: AppKey | None) -> DriftReport:
        """Check every running instance (of ``key``, or of every app) against its release
        now: drifted, unowned and missing ones. ``NotFound`` for an unknown app."""

    async def releases(self, key: AppKey) -> list[ReleaseView]:
        """Oldest first. ``NotFound`` for an unknown app."""

    async def release_counters(self) -> dict[AppKey, dict[int, ReleaseTraffic]]:
        """The router's cumulative counters per app and release (the numbers canary analysis
        judges), in one read; empty when NGINX does not answer."""

    async def instance_stats(self) -> dict[str, InstanceStats]:
        """CPU and memory of running instances by container id, as the metrics sampler last
        read them (empty when metrics are off)."""

    async def events(
        self,
        *,
        key: AppKey | None,
        after_id: int = 0,
        limit: int = 100,
        kinds: frozenset[EventKind] | None = None,
    ) -> list[Event]:
        """``kinds``: only these (None: every kind); ``limit`` counts matching events."""

    async def metrics(self) -> bytes:
        """The Prometheus text exposition; ``NotFound`` when metrics are off."""

    def observe_api_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one API request (route template, e.g. ``/v1/apps/{env}/{app}``)."""

    def follow_events(
        self, *, key: AppKey | None, after_id: int, kinds: frozenset[EventKind] | None = None
    ) -> AsyncIterator[Event]:
        """Events after ``after_id`` as they are appended, until cancelled."""

    def logs(
        self,
        key: AppKey,
        *,
        instance: str | None,
        follow: bool,
        tail: int | None,
        request: LogRequest | None = None,
    ) -> AsyncIterator[ArchivedLine]:
        """Kept log lines of the app's instances (or one; gone ones too), in time order.
        ``NotFound`` for an unknown app or instance."""

    async def request_shutdown(self) -> None:
        """Stop the server gracefully (NGINX and the apps keep serving)."""

    # --- images (kiln build, kiln images) -------------------------------------------------

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
        """Build the tar ``context`` on the engine, push it to the registry, record its tag
        (``Conflict`` when the tag already means another image)."""

    async def list_images(self, repository: str | None) -> list[ImageView]:
        """kiln's catalogue: tags, digests, sizes, provenance, releases and instances."""

    async def prune_images(self, *, dry_run: bool, who: str) -> PruneResult:
        """Delete what no release inside retention and no instance needs; collect garbage."""
