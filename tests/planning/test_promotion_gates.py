"""Promotion gates, pure: each refuses with its reason and numbers; the clock is an argument."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from kiln.planning.promotion import (
    ApprovalFact,
    GateRules,
    SourceFacts,
    check_gates,
    duration_text,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
GOOD = SourceFacts(
    environment="staging",
    app="web",
    release=4,
    serving=True,
    ready=3,
    wanted=3,
    rollout_state="succeeded",
    live_since=NOW - timedelta(minutes=30),
)
RULES = GateRules(environment="production", min_soak=600, approval_required=False)


def failing(source: SourceFacts, rules: GateRules = RULES, approval=None) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {g.name: g.detail for g in check_gates(source, rules, approval, now=NOW) if not g.passed}


def test_a_release_that_soaked_and_passed_passes_every_gate() -> None:
    gates = check_gates(GOOD, RULES, None, now=NOW)
    assert [g.name for g in gates] == ["serving", "rollout", "analysis", "soak", "approval"]
    assert all(g.passed for g in gates)
    assert next(g for g in gates if g.name == "soak").detail.startswith("live and healthy 30m")


def test_soak_counts_from_going_live_and_says_how_long_is_left() -> None:
    young = replace(GOOD, live_since=NOW - timedelta(minutes=4, seconds=10))
    assert failing(young) == {
        "soak": "live and healthy 4m10s of the 10m production requires; try again in 5m50s"
    }


def test_a_crash_restarts_the_soak() -> None:
    crashed = replace(GOOD, trouble_at=NOW - timedelta(minutes=2))
    assert failing(crashed)["soak"].startswith(
        "live and healthy 2m since its last crash or failed check of the 10m"
    )


def test_a_release_that_does_not_serve_or_is_not_ready_is_refused() -> None:
    assert "is not what staging/web runs now" in failing(replace(GOOD, serving=False))["serving"]
    assert failing(replace(GOOD, ready=2))["serving"] == (
        "2 of 3 instance(s) ready; see `kiln status staging/web`"
    )


def test_a_failed_rollout_fails_the_rollout_and_analysis_gates() -> None:
    bad = replace(
        GOOD,
        rollout_state="failed",
        rollout_reason="error rate 7.9% > 1%",
        live_since=None,
        analysis=True,
        analysis_verdict="error rate 7.9% > 1% over 412 requests",
    )
    found = failing(bad)
    assert found["rollout"] == "its rollout is failed (error rate 7.9% > 1%)"
    assert found["analysis"].startswith("not passed: the rollout it judges did not succeed")
    assert found["soak"] == "not live yet; production requires 10m in staging/web"


def test_approval_required_needs_an_approval_of_this_release() -> None:
    rules = replace(RULES, approval_required=True)
    assert failing(GOOD, rules) == {
        "approval": "production requires an approval: `kiln approve web --env production "
        "--release 4`"
    }
    approved = ApprovalFact(approved_by="lead", approved_at=NOW - timedelta(minutes=1))
    assert failing(GOOD, rules, approved) == {}


def test_every_failing_gate_is_reported_at_once() -> None:
    everything = replace(GOOD, serving=False, rollout_state=None, live_since=None)
    assert set(failing(everything, replace(RULES, approval_required=True))) == {
        "serving",
        "rollout",
        "soak",
        "approval",
    }


def test_durations_read_like_a_person_writes_them() -> None:
    assert [duration_text(s) for s in (0, 45, 600, 250, 3720)] == [
        "0s",
        "45s",
        "10m",
        "4m10s",
        "1h2m",
    ]
