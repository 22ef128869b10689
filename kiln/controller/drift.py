"""Drift: every running instance checked against its release, on a schedule and on demand.

    every drift.interval (and `kiln drift`)
      driver.list_instances ──▶ per running instance (at most drift.concurrency at a time):
        no app or no release owns it ───────────▶ unowned: event; its loop removes it
        driver.drift(container, instance_spec) ─▶ differences (image, config, files)
            drift: replace ──▶ plane.drifted[id] = what; wake its loop: the planner replaces
                               it like a rolling update (it serves until its replacement is ready)
            drift: report  ──▶ event only
      apps short of instances (outside a rollout) ──▶ missing: reported (the loop starts them)

Each difference is an event once (``drift.detected``), and ``drift.corrected`` when a
replaced instance is gone (seen by its app's round, or by a check). Containers removed by hand are noticed by the round that lists
them (``round.py``) and reported with the same kind. The checks run in the driver's threads:
the event loop only waits on them.

What is kept to report each thing once (``plane.drifted``, ``drift_replacing``,
``drift_reported``, ``removed_by_kiln``) is level-based: the app's round drops the records of a container once its
listing no longer shows it and it decided whether that was drift (``forget_gone_drift``), and
a destroyed app's go with it (``ControlPlane.forget_app``). They hold what exists, whether or
not checks run on a schedule (``drift.interval: 0``: on demand only).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from kiln.controller.runtime import ControlPlane
from kiln.errors import KilnError, NotFound
from kiln.model import AppKey, EventKind, Instance, Severity
from kiln.planning.instances import instance_spec
from kiln.spec import DriftAction

log = logging.getLogger("kiln.drift")


@dataclass(frozen=True, kw_only=True)
class DriftFinding:
    key: AppKey
    kind: str  # drifted | unowned | missing
    instance: str | None
    release: int | None
    container_id: str | None
    details: tuple[str, ...]
    action: str  # replace | report | remove | start


@dataclass(frozen=True, kw_only=True)
class DriftReport:
    checked_at: datetime
    checked: int  # instances compared with their release
    findings: tuple[DriftFinding, ...]


def report_drift(
    plane: ControlPlane, instance: Instance, details: tuple[str, ...], reason: str
) -> None:
    """A ``drift.detected`` event, once per container and set of differences."""
    plane.note_drift_record(instance.key, instance.id, instance.container_id)
    if plane.drift_reported.get(instance.container_id) == details:
        return
    plane.drift_reported[instance.container_id] = details
    plane.events.record(
        instance.key,
        EventKind.DRIFT_DETECTED,
        reason,
        severity=Severity.WARNING,
        release=instance.release,
        instance=instance.id,
    )


def unowned(instance: Instance) -> tuple[str, ...]:
    return (
        f"container {instance.container_id[:12]} has this kiln's labels for release "
        f"{instance.release} of {instance.key}, but no release owns it",
    )


async def report_strangers(plane: ControlPlane, key: AppKey, instances: list[Instance]) -> None:
    """Instances this app's rounds neither adopted nor started: someone started a container
    with kiln's labels. One of a known release is replaced like a drifted instance (whatever
    it runs, kiln did not make it from the release); one that no release owns is removed by
    the plan (it is in no group)."""
    if plane.driver.placement != "instances":
        return  # an orchestrator starts instances itself: kiln never knows their ids first
    known = plane.known_instances.get(key)
    if known is None:
        plane.known_instances[key] = {i.id for i in instances}  # adopted as they are
        return
    for instance in instances:
        if instance.id in known or instance.legacy:
            continue
        if (
            await plane.store.get_app(key) is None
            or await plane.release_or_none(key, instance.release) is None
        ):
            details = unowned(instance)
            then = "removing it (kiln runs only what a release says)"
        else:
            details = (
                f"container {instance.container_id[:12]} was started outside kiln with the labels"
                f" of release {instance.release}",
            )
            plane.drifted[instance.id] = details[0]
            plane.note_drift_record(key, instance.id, instance.container_id)
            then = "replacing it from its release"
        report_drift(plane, instance, details, f"{instance.id}: {details[0]}; {then}")


def remember_started(
    plane: ControlPlane, key: AppKey, started: set[str], removed: set[tuple[str, str]]
) -> None:
    """What this round's plan starts (instance ids) and stops or removes ((instance id,
    container id) pairs)."""
    known = plane.known_instances.setdefault(key, set())
    known |= started  # a start may still be under way: forgotten only once seen gone
    for instance_id, container_id in removed:
        plane.removed_by_kiln.add(container_id)
        plane.note_drift_record(key, instance_id, container_id)


def drift_records_of(plane: ControlPlane, key: AppKey) -> frozenset[tuple[str, str]]:
    """``key``'s drift records now: a round takes them before it asks for its listing, which
    starts after it asked (shared.py), so a container of one of them that the listing lacks
    is gone (one recorded later may be new: a later round looks at it)."""
    return frozenset(plane.drift_records.get(key, ()))


def forget_gone_drift(
    plane: ControlPlane,
    key: AppKey,
    recorded: frozenset[tuple[str, str]],
    listed: Sequence[Instance],
) -> None:
    """Drop the drift records of ``recorded`` whose container ``listed`` lacks. Only after
    the round's ``report_missing``: ``removed_by_kiln`` and ``drift_reported`` are what keeps
    the round that sees a container gone from reporting kiln's own removal, or a removal the
    destroy event reported already; after it, the instance is no longer known, so a late
    destroy event of the container reports nothing either (``report_removed``)."""
    if not recorded:
        return
    containers = {i.container_id for i in listed}
    gone = [record for record in recorded if record[1] not in containers]
    if gone:
        present = {i.id for i in listed}
        for instance_id, _ in gone:
            if instance_id not in present:
                report_corrected(plane, instance_id)
        plane.drop_drift_records(key, gone, keep_instances=present)


def report_corrected(plane: ControlPlane, instance_id: str) -> None:
    """A ``drift.corrected`` event once an instance replaced for drift is gone."""
    replacing = plane.drift_replacing.pop(instance_id, None)
    if replacing is None:
        return
    app, release, what = replacing
    plane.drifted.pop(instance_id, None)
    plane.events.record(
        app,
        EventKind.DRIFT_CORRECTED,
        f"{instance_id} of release {release} (drifted: {what}) was replaced from its release",
        release=release,
        instance=instance_id,
    )


def report_removed(plane: ControlPlane, key: AppKey, instance_id: str, container_id: str) -> None:
    """A container of an instance this app's rounds knew is gone, and no plan stopped or
    removed it: someone removed it by hand (the round then starts a replacement). Called on
    the engine's destroy event and by the round that no longer lists it."""
    if container_id in plane.removed_by_kiln:
        return
    if plane.driver.placement != "instances" or instance_id not in plane.known_instances.get(
        key, set()
    ):
        return  # an orchestrator's own doing, or a stranger kiln removed already
    if plane.instance_keys.get(instance_id) != key and not any(
        i.id == instance_id and i.container_id == container_id
        for i in plane.last_instances.get(key, ())
    ):
        # Neither started (tracked) nor listed: a container whose start failed, which the
        # driver removed itself (Docker creates it first), is no drift.
        return
    details = (f"container {container_id[:12]} was removed outside kiln",)
    if plane.drift_reported.get(container_id) == details:
        return
    plane.drift_reported[container_id] = details
    plane.note_drift_record(key, instance_id, container_id)
    release = next(
        (i.release for i in plane.last_instances.get(key, []) if i.id == instance_id), None
    )
    of_release = f" of release {release}" if release is not None else ""
    plane.events.record(
        key,
        EventKind.DRIFT_DETECTED,
        f"{instance_id}{of_release} is missing: {details[0]}; starting a replacement",
        severity=Severity.WARNING,
        release=release,
        instance=instance_id,
    )


class DriftChecker:
    def __init__(self, plane: ControlPlane) -> None:
        self._plane = plane

    async def run(self) -> None:
        """Check every app every ``drift.interval`` seconds until cancelled (0: never)."""
        interval = self._plane.settings.file.drift.interval
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval / 2)
            try:
                # Spread over half the interval: a steady trickle of inspects, not a burst of
                # hundreds that delays every probe and API call on a busy engine.
                await self.check(spread=interval / 2)
            except asyncio.CancelledError:
                raise
            except KilnError as exc:
                log.warning("drift check failed (next in %gs): %s", interval, exc.message)
            except Exception:
                log.exception("drift check failed")

    async def check(self, key: AppKey | None = None, *, spread: float = 0.0) -> DriftReport:
        """Check ``key``'s running instances (every app's when None) now; ``spread`` seconds:
        start the checks evenly over that long instead of all at once."""
        plane = self._plane
        now = plane.clock()
        recorded = {k: frozenset(r) for k, r in plane.drift_records.items()} if key is None else {}
        instances = await plane.driver.list_instances(key)
        running = [i for i in instances if i.running and not i.legacy]
        limit = asyncio.Semaphore(plane.settings.file.drift.concurrency)
        step = spread / len(running) if running else 0.0
        results = await asyncio.gather(
            *(self._check_one(i, limit, delay=n * step) for n, i in enumerate(running))
        )
        findings = [f for f in results if f is not None]
        findings += await self._missing(key, instances)
        self._forget_gone(key, instances, recorded)
        return DriftReport(checked_at=now, checked=len(running), findings=tuple(findings))

    async def _check_one(
        self, instance: Instance, limit: asyncio.Semaphore, *, delay: float = 0.0
    ) -> DriftFinding | None:
        if delay:
            await asyncio.sleep(delay)
        plane = self._plane
        key = instance.key
        release = await plane.release_or_none(key, instance.release)
        if await plane.store.get_app(key) is None or release is None:
            details = unowned(instance)
            report_drift(
                plane,
                instance,
                details,
                f"{instance.id}: {details[0]}; removing it (kiln runs only what a release says)",
            )
            plane.loops.wake(key)
            return self._finding(instance, "unowned", details, "remove")
        async with limit:
            try:
                details = tuple(
                    await plane.driver.drift(
                        instance.container_id, instance_spec(release, instance.id)
                    )
                )
            except NotFound:
                return None  # gone meanwhile: the round reports it if nobody stopped it
        if not details:
            if instance.id not in plane.known_instances.get(key, {instance.id}):
                return None  # started outside kiln: the round reported it
            plane.drifted.pop(instance.id, None)
            return None
        what = "; ".join(details)
        action = release.spec.drift
        if action is DriftAction.REPLACE:
            plane.drifted[instance.id] = what
            plane.note_drift_record(key, instance.id, instance.container_id)
            plane.drift_replacing[instance.id] = (key, instance.release, what)
            plane.loops.wake(key)
            then = "replacing it (drift: replace)"
        else:
            then = "left running (drift: report); `kiln deploy` or `kiln rollback` replaces it"
        report_drift(
            plane,
            instance,
            details,
            f"{instance.id} of release {instance.release} drifted from its release: {what}; {then}",
        )
        return self._finding(instance, "drifted", details, action.value)

    async def _missing(self, key: AppKey | None, instances: list[Instance]) -> list[DriftFinding]:
        plane = self._plane
        apps = (
            [await plane.store.get_app(key)] if key is not None else await plane.store.list_apps()
        )
        found = []
        for app in apps:
            if app is None or app.stopped or app.target_release is None:
                continue
            if app.target_release != app.stable_release or await plane.store.active_rollout(
                app.key
            ):
                continue  # a rollout places instances as it goes
            have = sum(
                1
                for i in instances
                if i.key == app.key and i.release == app.target_release and i.running
            )
            if have < app.scale:
                found.append(
                    DriftFinding(
                        key=app.key,
                        kind="missing",
                        instance=None,
                        release=app.target_release,
                        container_id=None,
                        details=(
                            f"{app.scale - have} of {app.scale} instances of release "
                            f"{app.target_release} are not running",
                        ),
                        action="start",
                    )
                )
        return found

    def _forget_gone(
        self,
        key: AppKey | None,
        instances: list[Instance],
        recorded: dict[AppKey, frozenset[tuple[str, str]]],
    ) -> None:
        plane = self._plane
        present = {i.id for i in instances}
        for instance_id, (app, _, _) in list(plane.drift_replacing.items()):
            if instance_id not in present and (key is None or app == key):
                report_corrected(plane, instance_id)
        if key is None:
            for instance_id in set(plane.drifted) - present:
                del plane.drifted[instance_id]
            # The records of an app with a loop are its rounds' to drop: one that sees a
            # container gone still needs them to tell kiln's removal from one by hand. Those of
            # an app without one (none should be left) go once the full listing lacks them.
            looping = set(plane.loops.keys())
            for app, records in recorded.items():
                if app not in looping:
                    forget_gone_drift(plane, app, records, instances)

    @staticmethod
    def _finding(
        instance: Instance, kind: str, details: tuple[str, ...], action: str
    ) -> DriftFinding:
        return DriftFinding(
            key=instance.key,
            kind=kind,
            instance=instance.id,
            release=instance.release,
            container_id=instance.container_id,
            details=details,
            action=action,
        )
