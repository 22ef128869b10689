"""``FakeService``: an in-memory ``Service`` for testing the API, the client and the CLI.

It keeps apps, releases, rollouts, events and log lines in plain containers. A rollout moves
one step each time someone reads the app's status (as the CLI does while it waits), so a
test drives a whole rollout without timers:

    deploy ─▶ instances created ─▶ running ─▶ ready, in router ─▶ succeeded
                                                                └▶ failed, rolled back
                                                                   (image in ``failing_images``)

Canary and blue-green rollouts (with a stable release to start from) are steered, as in kiln:
once running, a canary moves one step per read while its step has a ``pause`` and waits for
``promote`` at a step without one; a blue-green waits for ``promote`` (or moves on at once with
``auto_promote_after``). ``pause`` holds either; ``abort`` sends traffic back to stable and keeps
the new release as the held one; ``retry`` starts a failed or aborted rollout again. Reading the
rollout (``rollout_status``) moves it like reading the status does.

Streams (``follow_events``, ``logs(follow=True)``) poll the in-memory lists, so a test thread
may append to them while a server thread streams.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from kiln.controller.drift import DriftFinding, DriftReport
from kiln.controller.images import BuildResult, ImageView, PruneResult
from kiln.controller.views import (
    AppStatus,
    DeployResult,
    GroupView,
    InstanceView,
    KeyRotation,
    LogRequest,
    ReleaseTrafficView,
    ReleaseView,
    RolloutView,
    SecretSetResult,
    SecretView,
    VolumeView,
)
from kiln.drivers.base import InstanceStats, LogLine
from kiln.errors import Conflict, NotFound
from kiln.logs import ArchivedLine
from kiln.model import (
    AppKey,
    Event,
    EventKind,
    Release,
    ReleaseOrigin,
    ReleaseTraffic,
    Rollout,
    RolloutKind,
    RolloutProgress,
    RolloutState,
    Severity,
    Snapshot,
)
from kiln.planning.params import rollout_params
from kiln.spec import AppSpec, Strategy, parse_spec, spec_hash

POLL_SECONDS = 0.01
ROLLOUT_STEPS = 3  # status reads from "started" to "finished"
STEERED = (Strategy.CANARY, Strategy.BLUE_GREEN)  # what promote, pause and resume steer


@dataclass
class _FakeApp:
    key: AppKey
    scale: int
    releases: list[Release] = field(default_factory=list)
    rollouts: list[Rollout] = field(default_factory=list)
    target: int | None = None
    stable: int | None = None
    stopped: bool = False
    instances: list[InstanceView] = field(default_factory=list)
    steps: int = 0  # steps the active rollout has made
    warm_release: int | None = None
    warm_until: datetime | None = None
    held_release: int | None = None


class FakeService:
    def __init__(self) -> None:
        self.apps: dict[AppKey, _FakeApp] = {}
        self.event_log: list[Event] = []
        self.log_lines: dict[AppKey, list[LogLine]] = {}
        self.failing_images: set[str] = set()
        self.shutdown_requested = threading.Event()
        self.fail_with: Exception | None = None  # raised by the next call, once
        self.calls: list[tuple[str, str]] = []  # (method, who) of every write
        self.builds: list[tuple[str, str, str]] = []  # (repository, tag, dockerfile) built
        self.traffic: dict[AppKey, list[ReleaseTrafficView]] = {}  # what rollout_status shows
        self.counters: dict[AppKey, dict[int, ReleaseTraffic]] = {}  # the router's, cumulative
        self.stats: dict[str, InstanceStats] = {}  # by container id, as the metrics sampler
        self.drift_findings: list[DriftFinding] = []  # what drift reports
        self.quiet: set[AppKey] = set()  # apps with no requests lately (status says quiet)
        self._rollout_ids = 0
        self.metrics_text = b"# HELP kiln_up kiln\n# TYPE kiln_up gauge\nkiln_up 1.0\n"
        self.api_requests: list[tuple[str, str, int]] = []
        self.log_requests: list[LogRequest | None] = []
        # (key, name) → every value set, oldest first (a version is its index + 1)
        self.secret_values: dict[tuple[AppKey, str], list[bytes]] = {}

    # --- test helpers ---------------------------------------------------------------------

    def record(
        self, key: AppKey | None, kind: EventKind | str, reason: str, **extra: object
    ) -> Event:
        event = Event(
            id=len(self.event_log) + 1,
            at=datetime.now(UTC),
            key=key,
            kind=EventKind.parse(str(kind)),
            reason=reason,
            **extra,  # type: ignore[arg-type]
        )
        self.event_log.append(event)
        return event

    def add_log(self, key: AppKey, instance: str, text: str) -> None:
        line = LogLine(instance_id=instance, at=datetime.now(UTC), stream="stdout", text=text)
        self.log_lines.setdefault(key, []).append(line)

    def _check_failure(self) -> None:
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc

    def _app(self, key: AppKey) -> _FakeApp:
        self._check_failure()
        try:
            return self.apps[key]
        except KeyError:
            raise NotFound(f"no app {key}; `kiln status` lists the apps") from None

    # --- writes ---------------------------------------------------------------------------

    async def set_secret(
        self, key: AppKey, name: str, value: bytes, *, deploy: bool, who: str
    ) -> SecretSetResult:
        self._check_failure()
        self.calls.append(("set_secret", who))
        values = self.secret_values.setdefault((key, name), [])
        changed = not values or values[-1] != value
        if changed:
            values.append(value)
            self.record(key, "secret.set", f"{who} set secret {name}: version {len(values)}")
        return SecretSetResult(name=name, version=len(values), changed=changed)

    async def list_secrets(self, key: AppKey) -> list[SecretView]:
        self._check_failure()
        now = datetime.now(UTC)
        return [
            SecretView(
                name=name,
                version=len(values),
                versions=len(values),
                created_at=now,
                created_by="fake",
                in_use=None,
            )
            for (k, name), values in sorted(self.secret_values.items(), key=lambda kv: kv[0][1])
            if k == key
        ]

    async def remove_secret(self, key: AppKey, name: str, *, who: str) -> None:
        self._check_failure()
        if self.secret_values.pop((key, name), None) is None:
            raise NotFound(f"{key} has no secret {name}")

    async def rotate_master_key(self, *, who: str) -> KeyRotation:
        self._check_failure()
        count = sum(len(v) for v in self.secret_values.values())
        return KeyRotation(key_id="0" * 16, reencrypted=count, retired=[], unused_env_keys=[])

    # Volumes: none exist in the fake (an app's volumes are the engine's business).
    async def list_volumes(self, key: AppKey | None) -> list[VolumeView]:
        self._check_failure()
        return []

    async def inspect_volume(self, key: AppKey, name: str) -> VolumeView:
        self._check_failure()
        raise NotFound(f"{key} has no volume {name}")

    async def remove_volume(self, key: AppKey, name: str, *, who: str) -> None:
        await self.inspect_volume(key, name)

    async def snapshot_volume(
        self, key: AppKey, name: str, *, who: str, progress: Callable[[int], None]
    ) -> Snapshot:
        await self.inspect_volume(key, name)
        raise AssertionError("unreachable")

    async def restore_volume(
        self, key: AppKey, name: str, snapshot: str, *, who: str, progress: Callable[[int], None]
    ) -> Snapshot:
        await self.inspect_volume(key, name)
        raise AssertionError("unreachable")

    async def deploy(
        self, spec_text: str, *, message: str, who: str, environment: str | None = None
    ) -> DeployResult:
        self._check_failure()
        spec = parse_spec(spec_text)
        if environment is not None:
            spec = spec.model_copy(update={"environment": environment})
        key = AppKey(spec.environment, spec.app)
        self.calls.append(("deploy", who))
        app = self.apps.setdefault(key, _FakeApp(key=key, scale=spec.instances))
        app.scale, app.stopped = spec.instances, False
        digest = "sha256:" + hashlib.sha256(spec.image.encode()).hexdigest()
        current = self._release(app, app.target)
        if current and current.digest == digest and current.spec_hash == spec_hash(spec):
            return DeployResult(release=current, rollout=None, changed=False, message="unchanged")
        release = self._append_release(app, spec, digest, who, message)
        rollout = self._start_rollout(app, release)
        return DeployResult(release=release, rollout=rollout, changed=True)

    async def rollback(
        self, key: AppKey, *, to: int | None, message: str, who: str
    ) -> DeployResult:
        app = self._app(key)
        self.calls.append(("rollback", who))
        target = to if to is not None else (app.target or 0) - 1
        source = self._release(app, target)
        if source is None:
            if to is None:
                raise Conflict(f"{key} has no release before {app.target} to roll back to")
            raise NotFound(f"{key} has no release {to}")
        release = self._append_release(
            app,
            source.spec,
            source.digest,
            who,
            message,
            origin=ReleaseOrigin.ROLLBACK,
            rollback_of=source.number,
        )
        return DeployResult(
            release=release, rollout=self._start_rollout(app, release), changed=True
        )

    async def scale(self, key: AppKey, instances: int, *, who: str) -> AppStatus:
        app = self._app(key)
        self.calls.append(("scale", who))
        app.scale, app.stopped = instances, False
        self.record(key, "app.scaled", f"scale set to {instances} by {who}")
        return self._status(app)

    async def stop(self, key: AppKey, *, who: str) -> AppStatus:
        app = self._app(key)
        self.calls.append(("stop", who))
        app.stopped, app.instances = True, []
        self.record(key, "app.stopped", f"stopped by {who}")
        return self._status(app)

    async def destroy(self, key: AppKey, *, who: str, wait: bool = False) -> None:
        self._app(key)
        self.calls.append(("destroy --wait" if wait else "destroy", who))
        del self.apps[key]
        self.record(key, "app.destroyed", f"destroyed by {who}")

    async def request_shutdown(self) -> None:
        self.shutdown_requested.set()

    # --- images: this fake has no engine to build on and no registry ----------------------

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
        """Builds nothing: the digest is the hash of the context and the Dockerfile's name, so
        the same source is the same digest (what the CLI relies on), and the call is recorded."""
        self.calls.append(("build_image", who))
        self.builds.append((repository, tag, dockerfile))
        digest = "sha256:" + hashlib.sha256(context + b"\0" + dockerfile.encode()).hexdigest()
        return BuildResult(
            reference=f"registry.fake/{repository}@{digest}",
            repository=repository,
            tag=tag,
            digest=digest,
            image_id=digest,
            size=len(context),
            labels=labels,
            cached=False,
            pushed=True,
        )

    async def list_images(self, repository: str | None) -> list[ImageView]:
        return []

    async def prune_images(self, *, dry_run: bool, who: str) -> PruneResult:
        return PruneResult(removed=[], kept=[], collected="", dry_run=dry_run)

    # --- steering a rollout ---------------------------------------------------------------

    async def promote(self, key: AppKey, *, full: bool, who: str) -> RolloutView:
        app = self._app(key)
        self.calls.append(("promote", who))
        rollout = self._steered(app, "promote")
        self._set_progress(
            app,
            rollout,
            replace(
                rollout.progress, promote=True, promote_full=full, paused=False, pause_reason=""
            ),
        )
        what = "to all traffic" if full or rollout.strategy is Strategy.BLUE_GREEN else "a step"
        self.record(
            key,
            "rollout.promoted",
            f"{who} promoted release {rollout.to_release} {what}",
            release=rollout.to_release,
        )
        return self._rollout_view(app)

    async def pause(self, key: AppKey, *, who: str) -> RolloutView:
        app = self._app(key)
        self.calls.append(("pause", who))
        rollout = self._steered(app, "pause")
        if not rollout.progress.paused:
            progress = replace(rollout.progress, paused=True, pause_reason=f"paused by {who}")
            self._set_progress(app, rollout, progress)
            self.record(
                key,
                "rollout.paused",
                f"{who} paused the rollout to release {rollout.to_release}",
                release=rollout.to_release,
            )
        return self._rollout_view(app)

    async def resume(self, key: AppKey, *, who: str) -> RolloutView:
        app = self._app(key)
        self.calls.append(("resume", who))
        rollout = self._steered(app, "resume")
        if rollout.progress.paused:
            progress = replace(rollout.progress, paused=False, pause_reason="")
            self._set_progress(app, rollout, progress)
            self.record(
                key,
                "rollout.resumed",
                f"{who} resumed the rollout to release {rollout.to_release}",
                release=rollout.to_release,
            )
        return self._rollout_view(app)

    async def abort(self, key: AppKey, *, who: str) -> RolloutView:
        app = self._app(key)
        self.calls.append(("abort", who))
        rollout = self._active(app)
        if rollout is None:
            raise Conflict(f"{key} has no rollout in progress to abort; `kiln deploy` starts one")
        hold = rollout.from_release is not None and rollout.strategy in STEERED
        back = (
            f"traffic back to release {rollout.from_release}"
            if rollout.from_release
            else "no earlier release: app stopped"
        )
        reason = f"aborted by {who}; {back}" + (
            f"; release {rollout.to_release} kept for inspection until the next deploy"
            if hold
            else ""
        )
        self._end(app, rollout, RolloutState.ABORTED, reason, hold=hold)
        self.record(
            key,
            "rollout.aborted",
            reason,
            severity=Severity.WARNING,
            release=rollout.to_release,
        )
        return self._rollout_view(app)

    async def retry(self, key: AppKey, *, who: str) -> RolloutView:
        app = self._app(key)
        self.calls.append(("retry", who))
        if self._active(app) is not None:
            raise Conflict(f"{key} has a rollout in progress; `kiln abort {key.app}` first")
        last = app.rollouts[-1] if app.rollouts else None
        if last is None or last.state not in (RolloutState.FAILED, RolloutState.ABORTED):
            raise Conflict(
                f"{key}'s last rollout did not fail or get aborted: nothing to retry; "
                "`kiln deploy` starts a new one"
            )
        release = self._release(app, last.to_release)
        assert release is not None
        self._start_rollout(app, release, kind=RolloutKind.RETRY)
        return self._rollout_view(app)

    async def rollout_status(self, key: AppKey) -> RolloutView:
        app = self._app(key)
        self._advance(app)
        return self._rollout_view(app)

    # --- reads ----------------------------------------------------------------------------

    async def status(self, key: AppKey) -> AppStatus:
        app = self._app(key)
        self._advance(app)
        return self._status(app)

    async def list_status(self) -> list[AppStatus]:
        self._check_failure()
        return [self._status(app) for app in sorted(self.apps.values(), key=lambda a: a.key)]

    async def instance_stats(self) -> dict[str, InstanceStats]:
        return dict(self.stats)

    async def release_counters(self) -> dict[AppKey, dict[int, ReleaseTraffic]]:
        return {key: dict(counters) for key, counters in self.counters.items()}

    async def drift(self, key: AppKey | None) -> DriftReport:
        """What ``drift_findings`` holds (of ``key``, or all): the fake checks nothing."""
        self._check_failure()
        if key is not None:
            self._app(key)
        found = [f for f in self.drift_findings if key is None or f.key == key]
        return DriftReport(
            checked_at=datetime.now(UTC), checked=len(self.apps), findings=tuple(found)
        )

    async def releases(self, key: AppKey) -> list[ReleaseView]:
        app = self._app(key)
        latest = {r.to_release: r for r in app.rollouts}
        views = []
        for release in app.releases:
            rollout = latest.get(release.number)
            result, reason = (str(rollout.state), rollout.reason) if rollout else ("", "")
            if release.number == app.target and result == "succeeded":
                result = "current"
            views.append(ReleaseView(release=release, result=result, result_reason=reason))
        return views

    async def metrics(self) -> bytes:
        self._check_failure()
        return self.metrics_text

    def observe_api_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.api_requests.append((route, method, status))

    async def events(
        self,
        *,
        key: AppKey | None,
        after_id: int = 0,
        limit: int = 100,
        kinds: frozenset[EventKind] | None = None,
    ) -> list[Event]:
        self._check_failure()
        matching = [
            e
            for e in self.event_log
            if (key is None or e.key == key) and (kinds is None or e.kind in kinds)
        ]
        if after_id == 0:
            return matching[-limit:]
        return [e for e in matching if e.id > after_id][:limit]

    async def follow_events(
        self, *, key: AppKey | None, after_id: int, kinds: frozenset[EventKind] | None = None
    ) -> AsyncIterator[Event]:
        last = after_id
        while True:
            for event in [e for e in self.event_log if e.id > last]:
                last = event.id
                if (key is None or event.key == key) and (kinds is None or event.kind in kinds):
                    yield event
            await asyncio.sleep(POLL_SECONDS)

    async def logs(
        self,
        key: AppKey,
        *,
        instance: str | None,
        follow: bool,
        tail: int | None,
        request: LogRequest | None = None,
    ) -> AsyncIterator[ArchivedLine]:
        self._app(key)
        self.log_requests.append(request)
        if instance is not None and instance not in self._instance_ids(key):
            raise NotFound(f"no instance {instance} in {key}")
        lines = self.log_lines.setdefault(key, [])
        start = max(0, len(lines) - tail) if tail is not None else 0
        sent = start
        while True:
            for line in lines[sent:]:
                sent += 1
                if instance is None or line.instance_id == instance:
                    yield ArchivedLine(
                        at=line.at or datetime.now(UTC),
                        stream=line.stream,
                        release=int(line.instance_id[1:].split("-")[0])
                        if line.instance_id[1:].split("-")[0].isdigit()
                        else 0,
                        instance=line.instance_id,
                        text=line.text,
                    )
            if not follow:
                return
            await asyncio.sleep(POLL_SECONDS)

    # --- the fake rollout -----------------------------------------------------------------

    def _instance_ids(self, key: AppKey) -> set[str]:
        ids = {i.id for i in self.apps[key].instances}
        return ids | {line.instance_id for line in self.log_lines.get(key, [])}

    @staticmethod
    def _release(app: _FakeApp, number: int | None) -> Release | None:
        return next((r for r in app.releases if r.number == number), None)

    def _append_release(
        self,
        app: _FakeApp,
        spec: AppSpec,
        digest: str,
        who: str,
        message: str,
        *,
        origin: ReleaseOrigin = ReleaseOrigin.DEPLOY,
        rollback_of: int | None = None,
    ) -> Release:
        release = Release(
            key=app.key,
            number=len(app.releases) + 1,
            image=spec.image,
            digest=digest,
            spec=spec,
            spec_hash=spec_hash(spec),
            created_at=datetime.now(UTC),
            created_by=who,
            message=message,
            origin=origin,
            rollback_of=rollback_of,
        )
        app.releases.append(release)
        self.record(
            app.key, "release.created", f"release {release.number} by {who}", release=release.number
        )
        return release

    def _start_rollout(
        self, app: _FakeApp, release: Release, *, kind: RolloutKind = RolloutKind.DEPLOY
    ) -> Rollout:
        for i, old in enumerate(app.rollouts):
            if not old.state.finished:
                app.rollouts[i] = replace(old, state=RolloutState.SUPERSEDED)
        self._rollout_ids += 1
        now = datetime.now(UTC)
        rollout = Rollout(
            id=self._rollout_ids,
            key=app.key,
            from_release=app.stable,
            to_release=release.number,
            strategy=release.spec.deploy.strategy,
            state=RolloutState.IN_PROGRESS,
            started_at=now,
            deadline_at=now + timedelta(seconds=release.spec.deploy.deadline),
            kind=kind,
        )
        app.rollouts.append(rollout)
        app.target, app.steps, app.held_release = release.number, 0, None
        # A retried release starts over with new instances, as a held one is never reused.
        app.instances = [i for i in app.instances if i.release != release.number]
        self.record(
            app.key,
            "rollout.started",
            f"rolling out release {release.number}",
            release=release.number,
        )
        return rollout

    def _active(self, app: _FakeApp) -> Rollout | None:
        return next((r for r in reversed(app.rollouts) if not r.state.finished), None)

    def _advance(self, app: _FakeApp) -> None:
        rollout = self._active(app)
        if rollout is None:
            return
        app.steps += 1
        number = rollout.to_release
        new_ids = [f"r{number}-{n}" for n in range(app.scale)]
        if app.steps == 1:
            app.instances += [self._instance(i, number, "created") for i in new_ids]
            self.record(
                app.key, "instance.started", f"started {len(new_ids)} instance(s)", release=number
            )
        elif app.steps == 2:
            self._set_instances(app, number, status="running")
        elif self._is_steered(rollout):
            self._steer(app, rollout)
        elif app.steps >= ROLLOUT_STEPS:
            self._finish(app, rollout)

    @staticmethod
    def _is_steered(rollout: Rollout) -> bool:
        # Without a stable release to start from, kiln switches at once, as rolling does.
        return rollout.strategy in STEERED and rollout.from_release is not None

    def _steered(self, app: _FakeApp, verb: str) -> Rollout:
        rollout = self._active(app)
        if rollout is None:
            raise Conflict(
                f"{app.key} has no rollout in progress to {verb}; `kiln deploy` starts one"
            )
        if rollout.strategy not in STEERED:
            raise Conflict(
                f"the {rollout.strategy.value} rollout of {app.key} to release "
                f"{rollout.to_release} moves on by itself; only canary and blue-green rollouts "
                f"can be told to {verb}"
            )
        return rollout

    def _set_progress(self, app: _FakeApp, rollout: Rollout, progress: RolloutProgress) -> Rollout:
        updated = replace(rollout, progress=progress)
        app.rollouts[app.rollouts.index(rollout)] = updated
        return updated

    def _steer(self, app: _FakeApp, rollout: Rollout) -> None:
        """One round of a canary or blue-green rollout whose instances run."""
        release = self._release(app, rollout.to_release)
        assert release is not None
        params = rollout_params(release.spec.deploy)
        progress = rollout.progress
        if params.analysis is not None and rollout.strategy is Strategy.CANARY:
            verdict = (
                "fail: 12.5% errors (limit 1%)"
                if release.image in self.failing_images
                else "pass: 0.0% errors in 40 requests"
            )
            failing = progress.failing + 1 if verdict.startswith("fail") else 0
            progress = replace(
                progress, windows=progress.windows + 1, failing=failing, last_verdict=verdict
            )
            if failing >= params.analysis.failure_limit:
                rollout = self._set_progress(app, rollout, progress)
                self._finish(app, rollout)
                return
        if rollout.strategy is Strategy.BLUE_GREEN:
            auto = params.auto_promote_after is not None and not progress.paused
            if progress.promote or progress.promote_full or auto:
                self._finish(app, self._set_progress(app, rollout, replace(progress, step=1)))
            else:
                self._set_progress(app, rollout, progress)
            return
        steps = params.steps
        step = progress.step
        if progress.promote_full:
            step = len(steps)
        elif progress.promote or (
            not progress.paused and step < len(steps) and steps[step].pause is not None
        ):
            step += 1
        moved = step != progress.step
        progress = replace(progress, step=step, promote=False, promote_full=False)
        rollout = self._set_progress(app, rollout, progress)
        if step >= len(steps):
            self._finish(app, rollout)
        elif moved:
            self.record(
                app.key,
                "rollout.step",
                f"canary: moving to step {step + 1}/{len(steps)} ({steps[step].weight}%)",
                release=rollout.to_release,
            )

    def _finish(self, app: _FakeApp, rollout: Rollout) -> None:
        number = rollout.to_release
        release = self._release(app, number)
        assert release is not None
        steered = self._is_steered(rollout)
        if release.image in self.failing_images:
            if rollout.progress.failing:
                reason = (
                    f"analysis failed {rollout.progress.failing} window(s) in a row: "
                    f"{rollout.progress.last_verdict}; "
                    f"traffic back to release {rollout.from_release}"
                )
            else:
                reason = f"release {number} never became ready: connection refused on port 8080"
            self._end(app, rollout, RolloutState.FAILED, reason, hold=steered)
            self.record(
                app.key,
                "rollout.failed",
                reason if steered else reason + "; rolled back",
                severity=Severity.ERROR,
                release=number,
            )
            return
        now = datetime.now(UTC)
        app.rollouts[app.rollouts.index(rollout)] = replace(
            rollout,
            state=RolloutState.SUCCEEDED,
            finished_at=now,
            reason="every instance ready",
        )
        kept = rollout.from_release if steered else None
        app.instances = [
            replace(i, ready=True, in_router=True)
            for i in app.instances
            if i.release in (number, kept)
        ]
        if kept is not None:
            window = release.spec.deploy.rollback_window
            app.warm_release, app.warm_until = kept, now + timedelta(seconds=window)
        app.stable = number
        self.record(app.key, "rollout.succeeded", f"release {number} is live", release=number)

    def _end(
        self, app: _FakeApp, rollout: Rollout, state: RolloutState, reason: str, *, hold: bool
    ) -> None:
        """A failed or aborted rollout: traffic back to stable; with ``hold`` the new
        release's instances stay (out of the router) until the next deploy."""
        number = rollout.to_release
        app.rollouts[app.rollouts.index(rollout)] = replace(
            rollout, state=state, finished_at=datetime.now(UTC), reason=reason
        )
        if hold:
            app.instances = [
                replace(i, ready=False, in_router=False) if i.release == number else i
                for i in app.instances
            ]
            app.held_release = number
        else:
            app.instances = [i for i in app.instances if i.release != number]
        app.target = app.stable

    def _rollout_view(self, app: _FakeApp) -> RolloutView:
        active = self._active(app)
        rollout = active or (app.rollouts[-1] if app.rollouts else None)
        running: dict[int, int] = {}
        for instance in app.instances:
            if instance.status == "running":
                running[instance.release] = running.get(instance.release, 0) + 1
        release = self._release(app, rollout.to_release) if rollout else None
        params = rollout_params(release.spec.deploy) if release else None
        steps = [s.weight for s in params.steps] if params else []
        groups: list[tuple[int, str, int | None, int | None, bool]] = []
        status = rollout.reason if rollout else "no rollout yet"
        if active is not None and self._is_steered(active) and app.stable is not None:
            number, step = active.to_release, active.progress.step
            if active.strategy is Strategy.CANARY:
                weight = steps[min(step, len(steps) - 1)]
                size = max(1, -(-app.scale * weight // 100))
                groups += [(app.stable, "stable", app.scale, 100 - weight, False)]
                groups += [(number, "canary", size, weight, False)]
                status = (
                    f"canary step {step + 1}/{len(steps)}: {weight}% to release {number} "
                    f"({running.get(number, 0)}/{size} ready)"
                    + (" — paused" if active.progress.paused else "")
                )
                if active.progress.last_verdict:
                    status += f"; last window {active.progress.last_verdict}"
            else:
                groups += [(app.stable, "stable", app.scale, 100, False)]
                groups += [(number, "green", app.scale, 0, True)]
                status = f"blue-green: release {number} ready on preview; " + (
                    "paused" if active.progress.paused else "waiting for `kiln promote`"
                )
        elif active is not None:
            groups += [(active.to_release, "next", app.scale, None, False)]
            if app.stable is not None:
                groups += [(app.stable, "stable", app.scale, None, False)]
            status = f"{active.strategy.value}: rolling out release {active.to_release}"
        elif app.target is not None and not app.stopped:
            groups += [(app.target, "stable", app.scale, 100, False)]
        for number, role in ((app.warm_release, "warm"), (app.held_release, "held")):
            if number is not None:
                groups.append((number, role, None, 0, False))
        return RolloutView(
            key=app.key,
            rollout=rollout,
            active=active is not None,
            status=status,
            steps=steps if rollout and rollout.strategy is Strategy.CANARY else [],
            groups=[
                GroupView(
                    release=number,
                    role=role,
                    size=size,
                    share=share,
                    ready=min(running.get(number, 0), size or running.get(number, 0)),
                    preview=preview,
                )
                for number, role, size, share, preview in groups
            ],
            traffic=list(self.traffic.get(app.key, [])),
            warm_release=app.warm_release,
            warm_until=app.warm_until,
            held_release=app.held_release,
        )

    def _set_instances(self, app: _FakeApp, number: int, *, status: str) -> None:
        app.instances = [
            replace(i, status=status) if i.release == number else i for i in app.instances
        ]

    @staticmethod
    def _instance(instance_id: str, release: int, status: str) -> InstanceView:
        return InstanceView(
            id=instance_id,
            release=release,
            container_id="c" * 12 + instance_id,
            status=status,
            ready=False,
            in_router=False,
            draining=False,
            address=None,
            started_at=datetime.now(UTC),
            exit_code=None,
            last_error=None,
        )

    def _status(self, app: _FakeApp) -> AppStatus:
        rollout = self._active(app)
        ready = sum(1 for i in app.instances if i.ready and i.release == app.target)
        if app.stopped:
            state = "stopped"
        elif rollout is not None:
            state = "deploying"
        elif app.target is None:
            state = "empty"
        else:
            state = "running" if ready >= app.scale else "degraded"
        release = self._release(app, app.target)
        urls = [f"http://{app.key.app}.{app.key.environment}.localhost:8080/"] if release else []
        return AppStatus(
            key=app.key,
            state=state,
            scale=app.scale,
            stopped=app.stopped,
            target_release=app.target,
            stable_release=app.stable,
            ready=ready,
            instances=list(app.instances),
            rollout=rollout,
            urls=urls,
            quiet=app.key in self.quiet,
        )
