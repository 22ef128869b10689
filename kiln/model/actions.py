"""Actions: what the planner asks the controller to do. Each carries a reason for its event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from kiln.model.app import AppKey
from kiln.model.event import EventKind
from kiln.model.instance import InstanceSpec
from kiln.model.rollout import RolloutProgress, RolloutState
from kiln.model.routing import Peer, TrafficPolicy


@dataclass(frozen=True, kw_only=True)
class StartInstance:
    spec: InstanceSpec
    reason: str


@dataclass(frozen=True, kw_only=True)
class StopInstance:
    """Stop (SIGTERM, then SIGKILL after ``grace``) and remove a container that left the router."""

    instance_id: str
    container_id: str
    release: int
    grace: float
    reason: str


@dataclass(frozen=True, kw_only=True)
class RemoveInstance:
    """Remove the container of an instance that already exited."""

    instance_id: str
    container_id: str
    release: int
    reason: str


@dataclass(frozen=True, kw_only=True)
class SetPeers:
    """Replace the app's peer list and traffic policy in the router (no reload)."""

    key: AppKey
    peers: tuple[Peer, ...]
    policy: TrafficPolicy | None
    reason: str


@dataclass(frozen=True, kw_only=True)
class FinishRollout:
    """Close the rollout. ``FAILED``/``ABORTED`` send the app back to its stable release.

    ``warm_until``: a promoted blue-green or canary keeps the release it replaced up and
    routable until then. ``hold``: a failed blue-green or canary release stays up (no traffic)
    for inspection until the next deploy.
    """

    rollout_id: int
    state: RolloutState
    reason: str
    warm_until: datetime | None = None
    hold: bool = False


@dataclass(frozen=True, kw_only=True)
class UpdateRollout:
    """Persist the rollout's new progress (a step, a verdict, a pause); ``reason`` becomes an
    event of kind ``event`` when it is not empty."""

    rollout_id: int
    progress: RolloutProgress
    reason: str = ""
    event: EventKind = EventKind.ROLLOUT_PROGRESS
    warning: bool = False


@dataclass(frozen=True, kw_only=True)
class ScaleGroup:
    """One release group as an orchestrator takes it: release N of the app should run
    ``replicas`` instances shaped like ``template``; if it must remove some, ``retire_first``.

    Derived from the same round's per-instance actions (``kiln.planning.placement``), so drain
    before stop and crash backoff hold for both kinds of driver: an instance appears in
    ``retire_first`` only in the round the Docker driver would have stopped it.
    """

    key: AppKey
    release: int
    template: InstanceSpec | None  # None: a release on its way out (no new instance)
    replicas: int
    retire_first: tuple[str, ...]
    reason: str


@dataclass(frozen=True, kw_only=True)
class Wait:
    """Nothing to do until ``until`` (or a new observation); says why, so nothing is stuck silently."""

    reason: str
    until: datetime | None = None
    kind: Literal["drain", "backoff", "step", "window", ""] = ""  # what is awaited, for callers


Action = (
    StartInstance | StopInstance | RemoveInstance | SetPeers | FinishRollout | UpdateRollout | Wait
)
