"""Rollouts: the move of traffic and capacity from one release to another.

A rollout is a persisted state machine (``kiln.planning.rollout`` moves it): its strategy, the
step it is at and since when, whether a person paused it or asked to promote it, and the
analysis verdicts so far. Time is an input, so the same rollout row and clock give the same
decision after a restart of kiln.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from kiln.model.app import AppKey
from kiln.spec import Strategy

AWAITS_PROMOTE = "waiting for `kiln promote`"
"""In an app's status line while its rollout waits for a person; `kiln deploy` stops watching
there and says how to go on."""


class RolloutState(StrEnum):
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # failed on its own (deadline, crash loop, analysis); back to stable
    ABORTED = "aborted"  # a person aborted it; traffic back to stable at once
    SUPERSEDED = "superseded"  # a newer deploy started before this one finished

    @property
    def finished(self) -> bool:
        return self is not RolloutState.IN_PROGRESS


class RolloutKind(StrEnum):
    DEPLOY = "deploy"  # a new release (a deploy, or a rollback that made a new release)
    SWITCH_BACK = "switch_back"  # back to a release kept warm: a router switch, no new instances
    RETRY = "retry"  # an aborted or failed rollout started again from its first step


@dataclass(frozen=True, kw_only=True)
class RolloutProgress:
    """Where a rollout is, beyond its state. Changed only by the planner's ``UpdateRollout``.

    ``step``: canary: index into ``deploy.steps``; ``len(steps)`` means "promoting to all
    traffic". Blue-green: 0 = preview, 1 = promoted. Rolling/recreate: always 0.
    ``step_entered_at``: when the step began (its capacity must be ready within the deadline).
    ``step_ready_at``: when the step's capacity was first ready (its pause counts from here).
    ``promote``: a person asked to go on (``kiln promote``); ``promote_full`` skips every step left.
    ``failing`` / ``inconclusive``: analysis windows in a row with that verdict.
    """

    step: int = 0
    step_entered_at: datetime | None = None
    step_ready_at: datetime | None = None
    paused: bool = False
    pause_reason: str = ""
    promote: bool = False
    promote_full: bool = False
    failing: int = 0
    inconclusive: int = 0
    windows: int = 0  # analysis windows judged so far
    step_passed: bool = False  # a window of this step passed (no data is never a pass)
    last_verdict: str = ""


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
    kind: RolloutKind = RolloutKind.DEPLOY
    progress: RolloutProgress = RolloutProgress()
