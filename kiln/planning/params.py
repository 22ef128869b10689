"""A rollout's parameters as the planner uses them, read once from a release's ``deploy:``.

One place maps the spec's fields to the planner's words, so the rollout machine and the
analysis never reach into the spec themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.spec import DEFAULT_CANARY_STEPS, Deploy, Strategy


@dataclass(frozen=True, kw_only=True)
class CanaryStep:
    weight: int  # percent of requests to the new release
    pause: float | None  # seconds; None: wait for `kiln promote`


@dataclass(frozen=True, kw_only=True)
class AnalysisRules:
    interval: float
    max_error_rate: float  # fraction 0..1
    max_p95_ms: float | None
    max_p99_ms: float | None
    max_error_rate_increase: float | None  # fraction 0..1, against the stable release
    min_requests: int
    failure_limit: int
    inconclusive_limit: int
    pause_on_inconclusive: bool


@dataclass(frozen=True, kw_only=True)
class RolloutParams:
    strategy: Strategy
    deadline: float
    drain: float
    steps: tuple[CanaryStep, ...]
    canary_instances: int | None
    rollback_window: float
    auto_promote_after: float | None
    analysis: AnalysisRules | None


def rollout_params(deploy: Deploy) -> RolloutParams:
    steps = tuple(
        CanaryStep(weight=int(step.weight), pause=step.pause) for step in deploy.steps or ()
    )
    if deploy.strategy is Strategy.CANARY and not steps:
        # The spec fills in its default steps for a canary; a stored spec always has them.
        steps = tuple(CanaryStep(weight=int(s.weight), pause=s.pause) for s in DEFAULT_CANARY_STEPS)
    rules = deploy.analysis
    analysis = (
        None
        if rules is None
        else AnalysisRules(
            interval=rules.interval,
            max_error_rate=rules.max_error_rate,
            max_p95_ms=rules.max_p95_ms,
            max_p99_ms=rules.max_p99_ms,
            max_error_rate_increase=rules.max_error_rate_increase,
            min_requests=rules.min_requests,
            failure_limit=rules.failure_limit,
            inconclusive_limit=rules.inconclusive_limit,
            pause_on_inconclusive=rules.on_inconclusive == "pause",
        )
    )
    return RolloutParams(
        strategy=deploy.strategy,
        deadline=deploy.deadline,
        drain=deploy.drain,
        steps=steps,
        canary_instances=deploy.canary_instances,
        rollback_window=deploy.rollback_window,
        auto_promote_after=deploy.auto_promote_after,
        analysis=analysis,
    )
