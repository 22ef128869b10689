"""The thin executor: carry out one plan's actions through the ports, recording an event each.

Order matters for invariant 3 (traffic leaves an instance before it stops): ``SetPeers`` runs
first and alone; starts and removals then run concurrently; stops run in the background
(SIGTERM can take ``stop_grace``) so a slow app never holds up its own rollout, and begin once
the app's starts under way are done (``STOP_BEHIND_START``: on one engine they contend). A failed
action raises after the others finished; the next reconcile plans it again.

An orchestrator driver (``placement == "groups"``) gets the same round as release-group
targets (``plan.group_targets``: replicas per release, who to retire first) instead of the
per-instance starts, stops and removals; it places and restarts instances itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from kiln.controller.events import EventBus
from kiln.controller.observe import AppMemory
from kiln.drivers.base import Driver
from kiln.errors import Conflict, ImageNotFound, KilnError, PermanentFailure
from kiln.health.monitor import HealthMonitor
from kiln.model import (
    AppKey,
    EventKind,
    FinishRollout,
    Instance,
    InstanceSpec,
    RemoveInstance,
    RolloutState,
    ScaleGroup,
    SetPeers,
    Severity,
    StartInstance,
    StopInstance,
    UpdateRollout,
)
from kiln.planning import Plan
from kiln.router.base import Router
from kiln.store.aio import AsyncStore

log = logging.getLogger("kiln.controller")

STOP_BEHIND_START = 1.0
"""Seconds a stop waits for its app's starts under way. On one engine a stop (and the removal
that follows) and a start contend: a start beside its app's stop took 12-25 ms longer (the
rollout's own timeline), and the start is what a rollout waits on, while the instance that
stops has already left the router. Bounded: a start that pulls an image never holds a stop long."""


class Executor:
    def __init__(
        self,
        *,
        store: AsyncStore,
        driver: Driver,
        router: Router,
        health: HealthMonitor,
        events: EventBus,
        clock: Callable[[], datetime],
        track: Callable[[Instance], None],
        wake: Callable[[AppKey], None],
        changed: Callable[[AppKey, str | None], None],
        pull: Callable[[AppKey, str, int], Awaitable[bool]] | None = None,
        reveal: Callable[[AppKey, str, int], bytes] | None = None,
    ) -> None:
        self._store = store
        self._driver = driver
        self._router = router
        self._health = health
        self._events = events
        self._clock = clock
        self._track = track
        self._wake = wake
        # Told once the driver started, stopped or removed one of the app's containers (or
        # failed to; None when the container is unknown): kept engine lists of the app are
        # then out of date (shared.py).
        self._changed = changed
        # Pulls a release's pinned image the engine lacks (images.Puller); None: never pulls.
        self._pull = pull
        self._reveal = reveal
        self._background: set[asyncio.Task[None]] = set()
        # Each app's starts under way (count, and set when there are none): its stops wait.
        self._starting: dict[AppKey, tuple[int, asyncio.Event]] = {}

    async def execute(self, key: AppKey, plan: Plan, memory: AppMemory) -> None:
        now = self._clock()
        for action in plan.actions:
            if isinstance(action, SetPeers):
                await self._router.set_peers(key, action.peers, action.policy)
                memory.routed = frozenset(action.peers)
                memory.policy = action.policy
                self._events.record(key, EventKind.ROUTER_PEERS, action.reason)
        for instance_id in plan.retiring:
            memory.retiring_since.setdefault(instance_id, now)

        work: list[Awaitable[None]] = []
        if self._driver.placement == "groups":
            for group in plan.group_targets:
                memory.stopping.update(group.retire_first)
                work.append(self._scale(key, group))
        for action in plan.actions if self._driver.placement == "instances" else ():
            if isinstance(action, StartInstance):
                self._count_start(key, +1)  # before a stop of this round looks
                work.append(self._start(key, action))
            elif isinstance(action, RemoveInstance):
                work.append(self._remove(key, action, memory))
            elif isinstance(action, StopInstance) and action.instance_id not in memory.stopping:
                memory.stopping.add(action.instance_id)
                task = asyncio.create_task(self._stop(key, action, memory))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        results = await asyncio.gather(*work, return_exceptions=True)

        for action in plan.actions:
            if isinstance(action, UpdateRollout):
                await self._progress(key, action)
            elif isinstance(action, FinishRollout):
                await self._finish(key, action)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _start(self, key: AppKey, action: StartInstance) -> None:
        container_id = None  # a start that failed may have left a container: which, unknown
        try:
            container_id = await self._start_instance(key, action)
        finally:
            self._count_start(key, -1)
            self._changed(key, container_id)

    def _count_start(self, key: AppKey, step: int) -> None:
        count, none = self._starting.get(key, (0, asyncio.Event()))
        count += step
        if count:
            none.clear()
            self._starting[key] = (count, none)
        else:
            none.set()
            self._starting.pop(key, None)

    async def _behind_starts(self, key: AppKey) -> None:
        """Until none of ``key``'s starts is under way, or STOP_BEHIND_START."""
        starting = self._starting.get(key)
        if starting is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(starting[1].wait(), STOP_BEHIND_START)

    async def _start_instance(self, key: AppKey, action: StartInstance) -> str:
        """Start the instance; its container's id."""
        spec = action.spec
        try:
            # The plan names secret versions; their values are opened here, held in memory
            # for this start only, and handed to the driver alone.
            values = await self._store.run(self._secret_values, spec) if spec.secrets else {}
            try:
                instance = await self._driver.start_instance(spec, secrets=values)
            except ImageNotFound:
                # A release pins its image in the registry: an engine that never saw it pulls
                # it by digest, then starts the instance.
                if self._pull is None or not await self._pull(key, spec.image, spec.release):
                    raise
                instance = await self._driver.start_instance(spec, secrets=values)
        except KilnError as exc:
            self._events.record(
                key,
                EventKind.INSTANCE_START_FAILED,
                f"could not start {spec.id} of release {spec.release}: {exc.message}",
                severity=Severity.ERROR,
                release=spec.release,
                instance=spec.id,
            )
            raise
        self._track(instance)
        self._events.record(
            key,
            EventKind.INSTANCE_STARTED,
            f"{spec.id} of release {spec.release} started ({action.reason})"
            + (f", listening on {instance.address}" if instance.address else ""),
            release=spec.release,
            instance=spec.id,
        )
        return instance.container_id

    def _secret_values(self, spec: InstanceSpec) -> dict[str, bytes]:
        if self._reveal is None:
            raise PermanentFailure(f"{spec.key} uses secrets, but this kiln has no secret vault")
        return {ref.name: self._reveal(spec.key, ref.name, ref.version) for ref in spec.secrets}

    async def _remove(self, key: AppKey, action: RemoveInstance, memory: AppMemory) -> None:
        planned = (
            action.instance_id in memory.stopping or action.instance_id in memory.retiring_since
        )
        self._health.untrack(action.instance_id)
        try:
            removed = await self._driver.remove_instance(action.container_id)
        finally:
            self._changed(key, action.container_id)
        if not removed and not planned:
            # It died and was gone before kiln came to remove it: removed by hand (drift).
            self._events.record(
                key,
                EventKind.DRIFT_DETECTED,
                f"{action.instance_id} of release {action.release} is missing: its container "
                f"{action.container_id[:12]} was removed outside kiln; starting a replacement",
                severity=Severity.WARNING,
                release=action.release,
                instance=action.instance_id,
            )
        elif not planned:
            self._events.record(
                key,
                EventKind.INSTANCE_EXITED,
                f"{action.instance_id} of release {action.release} {action.reason}; replacing it",
                severity=Severity.WARNING,
                release=action.release,
                instance=action.instance_id,
            )

    async def _stop(self, key: AppKey, action: StopInstance, memory: AppMemory) -> None:
        self._health.untrack(action.instance_id)
        self._events.record(
            key,
            EventKind.INSTANCE_STOPPING,
            f"stopping {action.instance_id} of release {action.release}: {action.reason}",
            release=action.release,
            instance=action.instance_id,
        )
        try:
            await self._behind_starts(key)
            await self._driver.stop_instance(action.container_id, grace=action.grace)
        except KilnError as exc:
            memory.stopping.discard(action.instance_id)
            log.warning("stopping %s failed (will retry): %s", action.instance_id, exc.message)
        finally:
            self._changed(key, action.container_id)
            self._wake(key)

    async def _scale(self, key: AppKey, group: ScaleGroup) -> None:
        try:
            await self._driver.scale_group(group)
        except KilnError as exc:
            self._events.record(
                key,
                EventKind.GROUP_SCALE_FAILED,
                f"could not scale release {group.release} to {group.replicas}: {exc.message}",
                severity=Severity.ERROR,
                release=group.release,
            )
            raise
        finally:
            self._changed(key, None)

    async def _progress(self, key: AppKey, action: UpdateRollout) -> None:
        try:
            rollout = await self._store.update_rollout(
                action.rollout_id, action.progress, now=self._clock()
            )
        except Conflict:
            # A command finished or superseded the rollout since this round looked.
            self._wake(key)
            return
        if action.reason:
            self._events.record(
                key,
                action.event,
                action.reason,
                severity=Severity.WARNING if action.warning else Severity.INFO,
                release=rollout.to_release,
            )

    async def _finish(self, key: AppKey, action: FinishRollout) -> None:
        rollout = await self._store.finish_rollout(
            action.rollout_id,
            action.state,
            action.reason,
            now=self._clock(),
            warm_until=action.warm_until,
            hold=action.hold,
        )
        succeeded = action.state is RolloutState.SUCCEEDED
        self._events.record(
            key,
            EventKind.ROLLOUT_SUCCEEDED if succeeded else EventKind.ROLLOUT_FAILED,
            action.reason,
            severity=Severity.INFO if succeeded else Severity.ERROR,
            release=rollout.to_release,
        )
        self._wake(key)

    async def drain_background(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
