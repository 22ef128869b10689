"""Promotion gates: may a release of one environment go to the next one? Pure.

```
SourceFacts (the source release: its rollout, since when it serves, its last trouble)
GateRules   (the target environment: min_soak, approval required)     ──▶ check_gates ──▶ [Gate]
ApprovalFact | None, now
```

Every gate is always evaluated, so a refusal lists all that fail at once, each with its
numbers (``soak: live and healthy 4m10s of the 10m production requires``).

| gate | passes when |
|---|---|
| ``serving`` | the source release is the one its environment runs (target and stable), not stopped, every wanted instance ready |
| ``rollout`` | the rollout that brought it in succeeded |
| ``analysis`` | no analysis is configured, or its windows passed (a failed analysis fails the rollout too) |
| ``soak`` | it has been live and healthy (no crash, no failed liveness check of its instances) for ``min_soak`` |
| ``approval`` | the target needs none, or someone ran ``kiln approve`` for this very release |
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, kw_only=True)
class SourceFacts:
    environment: str
    app: str
    release: int
    serving: bool  # the app's target and stable release, not stopped
    ready: int  # ready instances of it
    wanted: int  # the app's scale
    rollout_state: str | None  # of the rollout that brought it in; None: none found
    rollout_reason: str = ""
    live_since: datetime | None = None  # when that rollout succeeded
    trouble_at: datetime | None = None  # the last crash or failed liveness check since then
    analysis: bool = False  # the release's spec asks for an analysis
    analysis_windows: int = 0
    analysis_verdict: str = ""


@dataclass(frozen=True, kw_only=True)
class GateRules:
    environment: str  # the target
    min_soak: float  # seconds
    approval_required: bool


@dataclass(frozen=True, kw_only=True)
class ApprovalFact:
    approved_by: str
    approved_at: datetime


@dataclass(frozen=True, kw_only=True)
class Gate:
    name: str
    passed: bool
    detail: str  # with its numbers; for a failure, what to do


def duration_text(seconds: float) -> str:
    """``4m10s``, ``10m``, ``1h2m``, ``45s``, ``0s``."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts) or "0s"


def check_gates(
    source: SourceFacts, rules: GateRules, approval: ApprovalFact | None, *, now: datetime
) -> list[Gate]:
    """Every gate, in a fixed order, passed or not."""
    where = f"{source.environment}/{source.app}"
    return [
        _serving(source, where),
        _rollout(source),
        _analysis(source),
        _soak(source, rules, where, now),
        _approval(source, rules, approval),
    ]


def _serving(source: SourceFacts, where: str) -> Gate:
    if not source.serving:
        return Gate(
            name="serving",
            passed=False,
            detail=f"release {source.release} is not what {where} runs now (or the app is "
            "stopped); promote the release that serves, or wait for its rollout to finish",
        )
    if source.wanted == 0 or source.ready < source.wanted:
        return Gate(
            name="serving",
            passed=False,
            detail=f"{source.ready} of {source.wanted} instance(s) ready; "
            f"see `kiln status {where}`",
        )
    return Gate(
        name="serving",
        passed=True,
        detail=f"release {source.release} serves {where}, {source.ready}/{source.wanted} ready",
    )


def _rollout(source: SourceFacts) -> Gate:
    if source.rollout_state == "succeeded":
        return Gate(name="rollout", passed=True, detail="its rollout succeeded")
    if source.rollout_state is None:
        return Gate(name="rollout", passed=False, detail="no rollout of this release was found")
    why = f" ({source.rollout_reason})" if source.rollout_reason else ""
    return Gate(
        name="rollout",
        passed=False,
        detail=f"its rollout is {source.rollout_state.replace('_', ' ')}{why}",
    )


def _analysis(source: SourceFacts) -> Gate:
    if not source.analysis:
        return Gate(name="analysis", passed=True, detail="no analysis configured")
    if source.rollout_state != "succeeded":
        return Gate(
            name="analysis",
            passed=False,
            detail="not passed: the rollout it judges did not succeed"
            + (f" (last verdict: {source.analysis_verdict})" if source.analysis_verdict else ""),
        )
    return Gate(
        name="analysis",
        passed=True,
        detail=f"passed ({source.analysis_windows} window(s) judged"
        + (f"; last: {source.analysis_verdict}" if source.analysis_verdict else "")
        + ")",
    )


def _soak(source: SourceFacts, rules: GateRules, where: str, now: datetime) -> Gate:
    need = duration_text(rules.min_soak)
    if source.live_since is None:
        return Gate(
            name="soak",
            passed=rules.min_soak == 0 and source.rollout_state == "succeeded",
            detail=f"not live yet; {rules.environment} requires {need} in {where}",
        )
    since = max(source.live_since, source.trouble_at or source.live_since)
    healthy = max(0.0, (now - since).total_seconds())
    trouble = (
        " since its last crash or failed check"
        if source.trouble_at and source.trouble_at > source.live_since
        else ""
    )
    if healthy >= rules.min_soak:
        return Gate(
            name="soak",
            passed=True,
            detail=f"live and healthy {duration_text(healthy)}{trouble} "
            f"(≥ {need} required by {rules.environment})",
        )
    return Gate(
        name="soak",
        passed=False,
        detail=f"live and healthy {duration_text(healthy)}{trouble} of the {need} "
        f"{rules.environment} requires; try again in {duration_text(rules.min_soak - healthy + 0.999)}",
    )


def _approval(source: SourceFacts, rules: GateRules, approval: ApprovalFact | None) -> Gate:
    if not rules.approval_required:
        return Gate(name="approval", passed=True, detail=f"{rules.environment} needs no approval")
    if approval is not None:
        return Gate(
            name="approval",
            passed=True,
            detail=f"approved by {approval.approved_by} at "
            f"{approval.approved_at.strftime('%Y-%m-%d %H:%M:%SZ')}",
        )
    return Gate(
        name="approval",
        passed=False,
        detail=f"{rules.environment} requires an approval: `kiln approve {source.app} "
        f"--env {rules.environment} --release {source.release}`",
    )
