"""``FakeService``: an in-memory ``Service`` for testing the API, the client and the CLI.

It keeps apps, releases, rollouts, events and log lines in plain containers. A rollout moves
one step each time someone reads the app's status (as the CLI does while it waits), so a
test drives a whole rollout without timers:

    deploy ─▶ instances created ─▶ running ─▶ ready, in router ─▶ succeeded
                                                                └▶ failed, rolled back
                                                                   (image in ``failing_images``)

Streams (``follow_events``, ``logs(follow=True)``) poll the in-memory lists, so a test thread
may append to them while a server thread streams.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from kiln.controller.views import AppStatus, DeployResult, InstanceView, ReleaseView
from kiln.drivers.base import LogLine
from kiln.errors import Conflict, NotFound
from kiln.model import AppKey, Event, Release, ReleaseOrigin, Rollout, RolloutState, Severity
from kiln.spec import AppSpec, parse_spec, spec_hash

POLL_SECONDS = 0.01
ROLLOUT_STEPS = 3  # status reads from "started" to "finished"


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


class FakeService:
    def __init__(self) -> None:
        self.apps: dict[AppKey, _FakeApp] = {}
        self.event_log: list[Event] = []
        self.log_lines: dict[AppKey, list[LogLine]] = {}
        self.failing_images: set[str] = set()
        self.shutdown_requested = threading.Event()
        self.fail_with: Exception | None = None  # raised by the next call, once
        self.calls: list[tuple[str, str]] = []  # (method, who) of every write
        self._rollout_ids = 0

    # --- test helpers ---------------------------------------------------------------------

    def record(self, key: AppKey | None, kind: str, reason: str, **extra: object) -> Event:
        event = Event(
            id=len(self.event_log) + 1,
            at=datetime.now(UTC),
            key=key,
            kind=kind,
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

    async def deploy(self, spec_text: str, *, message: str, who: str) -> DeployResult:
        self._check_failure()
        spec = parse_spec(spec_text)
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

    async def destroy(self, key: AppKey, *, who: str) -> None:
        self._app(key)
        self.calls.append(("destroy", who))
        del self.apps[key]
        self.record(key, "app.destroyed", f"destroyed by {who}")

    async def request_shutdown(self) -> None:
        self.shutdown_requested.set()

    # --- reads ----------------------------------------------------------------------------

    async def status(self, key: AppKey) -> AppStatus:
        app = self._app(key)
        self._advance(app)
        return self._status(app)

    async def list_status(self) -> list[AppStatus]:
        self._check_failure()
        return [self._status(app) for app in sorted(self.apps.values(), key=lambda a: a.key)]

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

    async def events(
        self, *, key: AppKey | None, after_id: int = 0, limit: int = 100
    ) -> list[Event]:
        self._check_failure()
        matching = [e for e in self.event_log if key is None or e.key == key]
        if after_id == 0:
            return matching[-limit:]
        return [e for e in matching if e.id > after_id][:limit]

    async def follow_events(self, *, key: AppKey | None, after_id: int) -> AsyncIterator[Event]:
        last = after_id
        while True:
            for event in [e for e in self.event_log if e.id > last]:
                last = event.id
                if key is None or event.key == key:
                    yield event
            await asyncio.sleep(POLL_SECONDS)

    async def logs(
        self, key: AppKey, *, instance: str | None, follow: bool, tail: int | None
    ) -> AsyncIterator[LogLine]:
        self._app(key)
        if instance is not None and instance not in self._instance_ids(key):
            raise NotFound(f"no instance {instance} in {key}")
        lines = self.log_lines.setdefault(key, [])
        start = max(0, len(lines) - tail) if tail is not None else 0
        sent = start
        while True:
            for line in lines[sent:]:
                sent += 1
                if instance is None or line.instance_id == instance:
                    yield line
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

    def _start_rollout(self, app: _FakeApp, release: Release) -> Rollout:
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
        )
        app.rollouts.append(rollout)
        app.target, app.steps = release.number, 0
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
        elif app.steps >= ROLLOUT_STEPS:
            self._finish(app, rollout)

    def _finish(self, app: _FakeApp, rollout: Rollout) -> None:
        number = rollout.to_release
        release = self._release(app, number)
        assert release is not None
        index = app.rollouts.index(rollout)
        if release.image in self.failing_images:
            reason = f"release {number} never became ready: connection refused on port 8080"
            app.rollouts[index] = replace(
                rollout, state=RolloutState.FAILED, finished_at=datetime.now(UTC), reason=reason
            )
            app.instances = [i for i in app.instances if i.release != number]
            app.target = app.stable
            self.record(
                app.key,
                "rollout.failed",
                reason + "; rolled back",
                severity=Severity.ERROR,
                release=number,
            )
            return
        app.rollouts[index] = replace(
            rollout,
            state=RolloutState.SUCCEEDED,
            finished_at=datetime.now(UTC),
            reason="every instance ready",
        )
        app.instances = [
            replace(i, ready=True, in_router=True) for i in app.instances if i.release == number
        ]
        app.stable = number
        self.record(app.key, "rollout.succeeded", f"release {number} is live", release=number)

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
        )
