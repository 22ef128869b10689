"""The rollout keys (blue-green, canary, analysis), honest resource defaults, `user` and `pids`,
and that releases stored by an older kiln still load."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.errors import SpecInvalid
from kiln.spec import (
    DEFAULT_CANARY_STEPS,
    AppSpec,
    CanaryStep,
    Strategy,
    parse_spec,
    spec_hash,
    validate_spec,
)

OK: dict[str, Any] = {"app": "web", "image": "nginx:1.27", "port": 80}

CANARY = """\
app: web
image: web:1.4
port: 8080
deploy:
  strategy: canary
  steps:
    - {weight: 10, pause: 30s}
    - {weight: 50, pause: 1m}
    - {weight: 90}
  canary_instances: 1
  rollback_window: 5m
  analysis:
    interval: 10s
    max_error_rate: 1%
    max_p95_ms: 500
    max_error_rate_increase: 0.5%
    min_requests: 20
    failure_limit: 2
    inconclusive_limit: 6
    on_inconclusive: pause
"""


def _problems(fields: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecInvalid) as caught:
        validate_spec({**OK, **fields})
    return caught.value.problems


def test_a_canary_spec_reads_as_written() -> None:
    deploy = parse_spec(CANARY).deploy

    assert deploy.strategy is Strategy.CANARY
    assert deploy.steps == [
        CanaryStep(weight=10, pause=30.0),
        CanaryStep(weight=50, pause=60.0),
        CanaryStep(weight=90, pause=None),  # waits for `kiln promote`
    ]
    assert (deploy.canary_instances, deploy.rollback_window) == (1, 300.0)
    analysis = deploy.analysis
    assert analysis is not None
    assert (analysis.interval, analysis.max_error_rate, analysis.max_p95_ms) == (10.0, 0.01, 500)
    assert analysis.max_error_rate_increase == pytest.approx(0.005)
    assert analysis.max_p99_ms is None
    assert (analysis.min_requests, analysis.failure_limit, analysis.inconclusive_limit) == (
        20,
        2,
        6,
    )
    assert analysis.on_inconclusive == "pause"


def test_a_canary_without_steps_keeps_the_default_steps_on_its_release() -> None:
    deploy = validate_spec({**OK, "deploy": {"strategy": "canary"}}).deploy

    assert deploy.steps == list(DEFAULT_CANARY_STEPS)
    assert [(s.weight, s.pause) for s in DEFAULT_CANARY_STEPS] == [(10, 60.0), (50, 60.0)]
    assert deploy.analysis is None  # no analysis unless asked for


def test_analysis_defaults() -> None:
    analysis = validate_spec(
        {**OK, "deploy": {"strategy": "canary", "analysis": {}}}
    ).deploy.analysis

    assert analysis is not None
    assert analysis.model_dump() == {
        "interval": 10.0,
        "max_error_rate": 0.01,
        "max_error_rate_increase": None,
        "max_p95_ms": None,
        "max_p99_ms": None,
        "min_requests": 20,
        "failure_limit": 2,
        "inconclusive_limit": 6,
        "on_inconclusive": "fail",
    }


def test_blue_green_switches_by_itself_only_when_asked() -> None:
    manual = validate_spec({**OK, "deploy": {"strategy": "blue-green"}}).deploy
    auto = validate_spec(
        {**OK, "deploy": {"strategy": "blue-green", "auto_promote_after": "30s"}}
    ).deploy

    assert (manual.auto_promote_after, manual.rollback_window, manual.steps) == (None, 300.0, None)
    assert auto.auto_promote_after == 30.0


def test_drain_is_the_longest_wait_for_requests_in_flight_30s_by_default() -> None:
    deploy = validate_spec(OK).deploy

    assert deploy.drain == 30.0
    assert validate_spec({**OK, "deploy": {"drain": "2m"}}).deploy.drain == 120.0


@pytest.mark.parametrize(("written", "fraction"), [("1%", 0.01), ("0.5%", 0.005), (0.02, 0.02),
                                                   ("100%", 1.0), (0, 0.0)])  # fmt: skip
def test_shares_are_percent_or_a_fraction(written: object, fraction: float) -> None:
    deploy = validate_spec(
        {**OK, "deploy": {"strategy": "canary", "analysis": {"max_error_rate": written}}}
    ).deploy

    assert deploy.analysis is not None
    assert deploy.analysis.max_error_rate == pytest.approx(fraction)


D = {"strategy": "canary"}


@pytest.mark.parametrize(
    ("deploy", "problem"),
    [
        (
            {"strategy": "rolling", "steps": [{"weight": 10}]},
            "deploy.steps: only strategy canary uses it (strategy is rolling); remove it or set"
            " strategy: canary",
        ),
        (
            {"strategy": "blue-green", "canary_instances": 2},
            "deploy.canary_instances: only strategy canary uses it (strategy is blue-green)",
        ),
        (
            {"strategy": "canary", "auto_promote_after": "30s"},
            "deploy.auto_promote_after: only strategy blue-green uses it (strategy is canary)",
        ),
        (
            {"strategy": "rolling", "analysis": {}},
            "deploy.analysis: only strategy canary uses it (strategy is rolling)",
        ),
        (
            {**D, "steps": []},
            "deploy.steps: give at least one step, or omit steps for the default",
        ),
        (
            {**D, "steps": [{"weight": 50}, {"weight": 50}]},
            "deploy.steps.1.weight: weights must increase from step to step: 50 follows 50",
        ),
        (
            {**D, "steps": [{"weight": 50}, {"weight": 10}]},
            "deploy.steps.1.weight: weights must increase from step to step: 10 follows 50",
        ),
        ({**D, "steps": [{"weight": 0}]}, "deploy.steps.0.weight: must be ≥ 1, got 0"),
        ({**D, "steps": [{"weight": 100}]}, "deploy.steps.0.weight: must be ≤ 99, got 100"),
        ({**D, "steps": [{"weight": True}]}, "deploy.steps.0.weight: expected a whole number"),
        ({**D, "steps": [{"pause": "1m"}]}, "deploy.steps.0.weight: is required"),
        (
            {**D, "steps": [{"weight": 10, "pause": "soon"}]},
            "deploy.steps.0.pause: expected a duration like 2s, 500ms or 1m30s, got 'soon'",
        ),
        (
            {**D, "steps": [{"weight": w} for w in range(1, 23)]},
            "deploy.steps: at most 20 steps, got 22",
        ),
        ({**D, "canary_instances": 0}, "deploy.canary_instances: must be ≥ 1, got 0"),
        ({**D, "canary_instances": 101}, "deploy.canary_instances: must be ≤ 100, got 101"),
        ({**D, "rollback_window": -1}, "deploy.rollback_window: must be ≥ 0, got -1"),
        (
            {**D, "analysis": {"max_error_rate": "5"}},
            "deploy.analysis.max_error_rate: expected a share like 1% or 0.01, got '5'",
        ),
        (
            {**D, "analysis": {"max_error_rate": 5}},
            "deploy.analysis.max_error_rate: must be between 0% and 100% (a fraction 0..1)"
            " (write 5% for 5 percent), got 5",
        ),
        (
            {**D, "analysis": {"max_error_rate_increase": "101%"}},
            "deploy.analysis.max_error_rate_increase: must be between 0% and 100%",
        ),
        ({**D, "analysis": {"max_p95_ms": 0}}, "deploy.analysis.max_p95_ms: must be > 0.0, got 0"),
        (
            {**D, "analysis": {"max_p99_ms": True}},
            "deploy.analysis.max_p99_ms: expected a number, got true",
        ),
        ({**D, "analysis": {"interval": "500ms"}}, "deploy.analysis.interval: must be ≥ 1"),
        ({**D, "analysis": {"min_requests": 0}}, "deploy.analysis.min_requests: must be ≥ 1"),
        ({**D, "analysis": {"failure_limit": 0}}, "deploy.analysis.failure_limit: must be ≥ 1"),
        (
            {**D, "analysis": {"inconclusive_limit": 1001}},
            "deploy.analysis.inconclusive_limit: must be ≤ 1000",
        ),
        (
            {**D, "analysis": {"on_inconclusive": "retry"}},
            "deploy.analysis.on_inconclusive: input should be 'fail' or 'pause', got 'retry'",
        ),
        ({**D, "analysis": {"max_error": "1%"}}, "deploy.analysis.max_error: is not a known field"),
        ({"strategy": "green-blue"}, "deploy.strategy: must be one of 'rolling', 'blue-green',"),
    ],
)
def test_a_bad_rollout_key_is_refused_naming_its_field(
    deploy: dict[str, Any], problem: str
) -> None:
    problems = _problems({"deploy": deploy})

    assert len(problems) == 1 and problems[0].startswith(problem), problems


@pytest.mark.parametrize("strategy", ["canary", "blue-green"])
def test_a_worker_cannot_shift_traffic(strategy: str) -> None:
    problems = _problems({"port": None, "command": ["work"], "deploy": {"strategy": strategy}})

    assert problems == [
        f"deploy.strategy: {strategy} moves traffic, so it needs a port; a worker (no port)"
        " deploys with rolling or recreate"
    ]


def test_a_worker_without_a_port_is_a_spec_and_routes_need_a_port() -> None:
    worker = validate_spec({"app": "jobs", "image": "jobs:1", "deploy": {"strategy": "recreate"}})
    assert worker.port is None and worker.effective_routes() == []

    assert _problems({"port": None, "routes": [{"path": "/"}]}) == [
        "routes: need a port: set port to where the app listens"
    ]


def test_resources_have_honest_defaults_and_null_means_no_limit() -> None:
    defaults = validate_spec(OK).resources
    unlimited = validate_spec(
        {**OK, "resources": {"cpus": None, "memory": None, "pids": None}}
    ).resources

    assert (defaults.cpus, defaults.memory, defaults.pids) == (0.5, 128 * 1024**2, 256)
    assert (unlimited.cpus, unlimited.memory, unlimited.pids) == (None, None, None)


@pytest.mark.parametrize(
    ("pids", "problem"),
    [
        (3, "resources.pids: must be ≥ 4, got 3"),
        (4_194_305, "resources.pids: must be ≤ 4194304, got 4194305"),
        (True, "resources.pids: expected a whole number, got true"),
    ],
)
def test_pids_are_bounded(pids: object, problem: str) -> None:
    assert _problems({"resources": {"pids": pids}}) == [problem]


@pytest.mark.parametrize(
    ("user", "stored"),
    [
        ("1000", "1000"),
        (1000, "1000"),
        ("1000:1000", "1000:1000"),
        ("app", "app"),
        ("app:staff", "app:staff"),
        ("www-data", "www-data"),
        ("_svc.x", "_svc.x"),
        ("0", "0"),
    ],
)
def test_user_is_a_name_or_uid_with_an_optional_group(user: object, stored: str) -> None:
    assert validate_spec({**OK, "user": user}).user == stored


def test_user_defaults_to_the_images_user() -> None:
    assert validate_spec(OK).user is None
    assert parse_spec("app: web\nimage: x\nuser: 1000:50\n").user == "1000:50"


@pytest.mark.parametrize(
    "user", ["", "app:", ":1000", "a b", "1000:1000:1", "4294967295", "-1", "app\n", "ñ", True]
)
def test_a_user_docker_could_not_use_is_refused(user: object) -> None:
    problems = _problems({"user": user})

    assert len(problems) == 1 and problems[0].startswith("user: "), problems


@pytest.mark.parametrize(
    "change",
    [
        {"deploy": {"strategy": "canary"}},
        {"deploy": {"strategy": "canary", "steps": [{"weight": 20, "pause": "1m"}]}},
        {"deploy": {"strategy": "canary", "canary_instances": 2}},
        {"deploy": {"strategy": "canary", "analysis": {}}},
        {"deploy": {"strategy": "canary", "analysis": {"max_error_rate": "2%"}}},
        {"deploy": {"strategy": "canary", "analysis": {"on_inconclusive": "pause"}}},
        {"deploy": {"strategy": "blue-green"}},
        {"deploy": {"strategy": "blue-green", "auto_promote_after": "30s"}},
        {"deploy": {"rollback_window": "10m"}},
        {"deploy": {"drain": "5s"}},
        {"resources": {"pids": 512}},
        {"resources": {"cpus": None}},
        {"user": "1000"},
    ],
)
def test_spec_hash_changes_with_every_new_field(change: dict[str, Any]) -> None:
    assert spec_hash(validate_spec({**OK, **change})) != spec_hash(validate_spec(OK))


def test_spec_hash_does_not_depend_on_how_a_new_field_was_written() -> None:
    a = {"strategy": "canary", "analysis": {"max_error_rate": "1%", "interval": "10s"}}
    b = {"strategy": "canary", "steps": [{"weight": 10, "pause": 60}, {"weight": 50, "pause": "1m"}],
         "analysis": {"max_error_rate": 0.01, "interval": 10}}  # fmt: skip

    assert spec_hash(validate_spec({**OK, "deploy": a})) == spec_hash(
        validate_spec({**OK, "deploy": b})
    )


# Dumps of specs as kiln stored them before the rollout keys, resources.pids and user existed
# (model_dump(mode="json") of a64e0f2's AppSpec).
STORED_BEFORE = [
    '{"app": "web", "environment": "dev", "image": "web:1.4", "command": null, "env": {}, "port":'
    ' 8080, "instances": 3, "resources": {"cpus": null, "memory": null}, "health": {"http":'
    ' "/healthz", "tcp": false, "command": null, "interval": 2.0, "timeout": 1.0, "grace": 30.0,'
    ' "healthy_threshold": 1, "unhealthy_threshold": 3, "readiness": null, "liveness": null},'
    ' "routes": [{"host": "web.example.com", "path": "/"}], "deploy": {"strategy": "rolling",'
    ' "max_surge": 1, "max_unavailable": 0, "deadline": 120.0, "drain": 2.0}, "stop_grace":'
    ' 10.0, "security": {"read_only": true, "cap_add": [], "tmpfs": ["/tmp"]}, "network":'
    ' "bridge"}',
    '{"app": "worker", "environment": "dev", "image": "w:1", "command": ["sleep", "9"], "env":'
    ' {}, "port": null, "instances": 1, "resources": {"cpus": 1.5, "memory": 67108864},'
    ' "health": null, "routes": null, "deploy": {"strategy": "recreate", "max_surge": 1,'
    ' "max_unavailable": 0, "deadline": 120.0, "drain": 5.0}, "stop_grace": 10.0, "security":'
    ' {"read_only": true, "cap_add": [], "tmpfs": ["/tmp"]}, "network": "bridge"}',
]


@pytest.mark.parametrize("stored", STORED_BEFORE)
def test_a_release_stored_before_the_new_keys_still_loads_as_it_ran(stored: str) -> None:
    spec = AppSpec.model_validate(json.loads(stored))

    old = json.loads(stored)
    # What it said stays what it says: no limits where it had none, its own drain.
    assert spec.resources.cpus == old["resources"]["cpus"]
    assert spec.resources.memory == old["resources"]["memory"]
    assert spec.deploy.drain == old["deploy"]["drain"]
    # What it did not say takes the defaults.
    assert (spec.deploy.steps, spec.deploy.analysis, spec.user) == (None, None, None)
    assert spec.deploy.rollback_window == 300.0 and spec.resources.pids == 256
    assert AppSpec.model_validate(spec.model_dump(mode="json")) == spec


@st.composite
def rollout_keys(draw: st.DrawFn) -> dict[str, Any]:
    strategy = draw(st.sampled_from(["rolling", "recreate", "blue-green", "canary"]))
    deploy: dict[str, Any] = {"strategy": strategy, "rollback_window": draw(st.integers(0, 900))}
    if strategy == "canary":
        weights = draw(st.lists(st.integers(1, 99), min_size=1, max_size=5, unique=True))
        pauses = st.none() | st.integers(0, 600).map(lambda n: f"{n}s")
        deploy["steps"] = draw(
            st.none() | st.just([{"weight": w, "pause": draw(pauses)} for w in sorted(weights)])
        )
        deploy["canary_instances"] = draw(st.none() | st.integers(1, 100))
        shares = st.integers(0, 100).map(lambda n: f"{n}%") | st.floats(0, 1)
        deploy["analysis"] = draw(
            st.none()
            | st.fixed_dictionaries(
                {
                    "interval": st.integers(1, 60),
                    "max_error_rate": shares,
                    "max_error_rate_increase": st.none() | shares,
                    "max_p95_ms": st.none() | st.floats(0.1, 10_000),
                    "min_requests": st.integers(1, 1000),
                    "on_inconclusive": st.sampled_from(["fail", "pause"]),
                }
            )
        )
    if strategy == "blue-green":
        deploy["auto_promote_after"] = draw(st.none() | st.integers(0, 600))
    return deploy


@settings(max_examples=100, deadline=None)
@given(rollout_keys(), st.sampled_from([None, "1000", "app:staff"]), st.integers(4, 10_000))
def test_rollout_keys_round_trip_with_the_same_hash(
    deploy: dict[str, Any], user: str | None, pids: int
) -> None:
    spec = validate_spec({**OK, "deploy": deploy, "user": user, "resources": {"pids": pids}})

    for mode in ("python", "json"):
        again = validate_spec(spec.model_dump(mode=mode))
        assert again == spec and spec_hash(again) == spec_hash(spec)
    if deploy["strategy"] == "canary":
        assert spec.deploy.steps  # given or the default, kept on the release
