"""Actions: what the planner asks the controller to do. Each carries a reason for its event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from kiln.model.app import AppKey
from kiln.model.instance import InstanceSpec
from kiln.model.rollout import RolloutState
from kiln.model.routing import Peer


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
    """Replace the app's peer list in the router (no reload)."""

    key: AppKey
    peers: tuple[Peer, ...]
    reason: str


@dataclass(frozen=True, kw_only=True)
class FinishRollout:
    """Close the rollout. ``FAILED`` sends the app back to its stable release."""

    rollout_id: int
    state: RolloutState
    reason: str


@dataclass(frozen=True, kw_only=True)
class Wait:
    """Nothing to do until ``until`` (or a new observation); says why, so nothing is stuck silently."""

    reason: str
    until: datetime | None = None
    kind: Literal["drain", "backoff", ""] = ""  # what is awaited, for callers that react to it


Action = StartInstance | StopInstance | RemoveInstance | SetPeers | FinishRollout | Wait
