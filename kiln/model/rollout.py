"""Rollouts: the move of traffic and capacity from one release to another."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from kiln.model.app import AppKey
from kiln.spec import Strategy


class RolloutState(StrEnum):
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # failed and the app went back to the previous release
    SUPERSEDED = "superseded"  # a newer deploy started before this one finished

    @property
    def finished(self) -> bool:
        return self is not RolloutState.IN_PROGRESS


@dataclass(frozen=True, kw_only=True)
class Rollout:
    id: int
    key: AppKey
    from_release: int | None
    to_release: int
    strategy: Strategy
    state: RolloutState
    started_at: datetime
    deadline_at: datetime
    finished_at: datetime | None = None
    reason: str = ""
