"""A bad spec gets every problem at once, each naming its field and what was given."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.errors import SpecInvalid
from kiln.spec import parse_spec, validate_spec

OK = {"app": "web", "image": "nginx:1.27"}
NAME = "must be a lowercase name (a-z, 0-9, -; starts with a letter, at most 40 characters)"


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecInvalid) as caught:
        validate_spec(data)
    return caught.value.problems


@pytest.mark.parametrize(
    ("fields", "problems"),
    [
        ({"instances": -1}, ["instances: must be ≥ 0, got -1"]),
        ({"instances": 101}, ["instances: must be ≤ 100, got 101"]),
        ({"instances": True}, ["instances: expected a whole number, got true"]),
        ({"port": 0}, ["port: must be ≥ 1, got 0"]),
        ({"app": "Web"}, [f"app: {NAME}, got 'Web'"]),
        ({"environment": "prod_1"}, [f"environment: {NAME}, got 'prod_1'"]),
        ({"imagee": "x"}, ["imagee: is not a known field (see `kiln schema`)"]),
        ({"command": []}, ["command: must name a program to run, got an empty list"]),
        ({"env": {"PORT": "80"}}, ["env: PORT is set by kiln from the port field"]),
        ({"env": {"1X": "a"}}, ["env: variable names are letters, digits and _, got ['1X']"]),
        (
            {"deploy": {"max_surge": 0, "max_unavailable": 0}},
            ["deploy: max_surge and max_unavailable cannot both be 0: the rollout could not start"],
        ),
        ({"deploy": {"deadline": "0s"}}, ["deploy.deadline: must be > 0.0, got 0.0"]),
        ({"deploy": {"drain": -1}}, ["deploy.drain: must be ≥ 0, got -1"]),
        (
            {"deploy": {"drain": "soon"}},
            ["deploy.drain: expected a duration like 2s, 500ms or 1m30s, got 'soon'"],
        ),
        (
            {"deploy": {"deadline": float("inf")}},
            ["deploy.deadline: expected a duration of at most 30 days, got inf"],
        ),
        (
            {"deploy": {"strategy": "green-blue"}},
            [
                "deploy.strategy: must be one of 'rolling', 'blue-green', 'canary' or "
                "'recreate', got 'green-blue'"
            ],
        ),
        (
            {"resources": {"memory": "1Mi"}},
            ["resources.memory: must be at least 6Mi (Docker's minimum), got 1048576 bytes"],
        ),
        (
            {"resources": {"memory": float("inf")}},
            ["resources.memory: expected a size like 128Mi or 1G, got inf"],
        ),
        ({"resources": {"cpus": 0}}, ["resources.cpus: must be ≥ 0.01, got 0"]),
        ({"routes": [{"path": "/"}]}, ["routes: need a port: set port to where the app listens"]),
        (
            {"health": {"http": "/healthz"}},
            ["health: http and tcp checks need a port: set port or use command"],
        ),
        (
            {"port": 80, "health": {"http": "/h", "tcp": True}},
            ["health: give one of http, tcp or command, not http and tcp"],
        ),
        (
            {"port": 80, "health": {"timeout": "5s", "interval": "1s"}},
            ["health: timeout (5s) must not exceed interval (1s)"],
        ),
        (
            {"port": 80, "health": {"readiness": {"http": "ready"}}},
            [
                "health.readiness.http: must be a path starting with / in visible ASCII (no spaces"
                " or control characters; at most 1024 characters), got 'ready'"
            ],
        ),
        (
            {"security": {"cap_add": ["net_admin"]}},
            ["security.cap_add: capabilities are names like NET_BIND_SERVICE, got ['net_admin']"],
        ),
    ],
)
def test_bad_field_is_reported_with_its_path(fields: dict[str, Any], problems: list[str]) -> None:
    assert _problems({**OK, **fields}) == problems


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems(
        {
            "app": "Web",
            "image": "",
            "port": 0,
            "instances": -1,
            "deploy": {"drain": "later", "max_surge": -2},
            "routes": [{"host": "not a host", "path": "api"}],
        }
    )

    assert problems == [
        f"app: {NAME}, got 'Web'",
        "image: string should have at least 1 character, got ''",
        "port: must be ≥ 1, got 0",
        "instances: must be ≥ 0, got -1",
        "routes.0.host: must be a host name like web.example.com or *.example.com (ASCII letters,"
        " digits and -; xn-- for international names; at most 253 characters), got 'not a host'",
        "routes.0.path: must start with / and use only ASCII letters, digits and"
        " - . _ ~ / @ : + , = % (at most 1024 characters), got 'api'",
        "deploy.max_surge: must be ≥ 0, got -2",
        "deploy.drain: expected a duration like 2s, 500ms or 1m30s, got 'later'",
    ]


def test_error_message_counts_the_problems_and_names_the_file() -> None:
    with pytest.raises(SpecInvalid) as caught:
        parse_spec("app: web\ninstances: -1\n", source="apps/web.yaml")

    assert caught.value.message == (
        "apps/web.yaml has 2 problems:\n  - image: is required\n  - instances: must be ≥ 0, got -1"
    )


def test_yaml_infinity_is_not_a_duration() -> None:
    with pytest.raises(SpecInvalid) as caught:
        parse_spec("app: web\nimage: x\ndeploy:\n  deadline: .inf\n")

    assert caught.value.problems == [
        "deploy.deadline: expected a duration of at most 30 days, got inf"
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the file is empty: give at least app and image"),
        (
            "app: [web\n",
            "not valid YAML at line 2, column 1: did not find expected ',' or ']'",
        ),
        ("- app: web\n", "the top level must be a mapping of fields, got list"),
        ("just text", "the top level must be a mapping of fields, got str"),
    ],
)
def test_text_that_is_not_a_spec_says_why(text: str, problem: str) -> None:
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(text)

    assert caught.value.problems == [problem]
