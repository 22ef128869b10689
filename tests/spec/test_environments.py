"""Per-environment overrides in kiln.yaml: what each environment runs, and every problem of an
override named with its path."""

from __future__ import annotations

import pytest

from kiln.errors import SpecInvalid
from kiln.spec import Strategy, for_environment, parse_spec, spec_changes, spec_hash

BASE = """
app: web
image: web:1.4
port: 8080
instances: 2
env: {LOG_LEVEL: info, DEBUG: "1"}
resources: {cpus: 0.5, memory: 128Mi}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecInvalid) as refused:
        parse_spec(text)
    return refused.value.problems


def test_an_environment_runs_the_base_with_its_override_applied() -> None:
    spec = parse_spec(
        BASE
        + """
environments:
  production:
    instances: 6
    env: {LOG_LEVEL: warn, DEBUG: null}
    resources: {memory: 512Mi}
    deploy: {strategy: canary, steps: [{weight: 20, pause: 30s}]}
    routes: [{host: web.example.com}]
"""
    )
    production = for_environment(spec, "production")
    assert production.environment == "production"
    assert production.instances == 6
    assert production.env == {"LOG_LEVEL": "warn"}  # merged; null removed DEBUG
    assert production.resources.memory == 512 * 2**20 and production.resources.cpus == 0.5
    assert production.deploy.strategy is Strategy.CANARY
    assert production.routes is not None and production.routes[0].host == "web.example.com"
    assert production.image == spec.image and production.environments is None

    staging = for_environment(spec, "staging")  # no entry: the base as it is
    assert staging.instances == 2 and staging.env == {"LOG_LEVEL": "info", "DEBUG": "1"}
    assert staging.deploy.strategy is Strategy.ROLLING


def test_changing_only_another_environments_override_keeps_this_environments_hash() -> None:
    one = parse_spec(BASE + "environments: {production: {env: {LOG_LEVEL: warn}}}\n")
    two = parse_spec(BASE + "environments: {production: {env: {LOG_LEVEL: error}}}\n")
    assert spec_hash(for_environment(one, "staging")) == spec_hash(for_environment(two, "staging"))
    assert spec_hash(for_environment(one, "production")) != spec_hash(
        for_environment(two, "production")
    )


def test_the_image_is_never_overridden_and_every_problem_is_named_with_its_path() -> None:
    found = problems(
        BASE
        + """
environments:
  production:
    image: web:1.5
    instances: -1
    replicas: 3
  Prod: {}
"""
    )
    assert any(
        p.startswith("environments.production.image: the image is the same in every environment")
        for p in found
    )
    assert "environments.production.instances: must be ≥ 0, got -1" in found
    assert "environments.production.replicas: is not a known field (see `kiln schema`)" in found
    assert any(p.startswith("environments.Prod") and "lowercase" in p for p in found)


def test_an_override_that_makes_the_environment_invalid_is_refused_with_its_path() -> None:
    worker = "app: job\nimage: job:1\n"  # no port: a worker
    found = problems(worker + "environments: {production: {deploy: {strategy: canary}}}\n")
    assert found == [
        "environments.production.deploy.strategy: canary moves traffic, so it needs a port; a "
        "worker (no port) deploys with rolling or recreate"
    ]
    found = problems(BASE + "environments: {production: {env: {PORT: '1'}}}\n")
    assert found == ["environments.production.env: PORT is set by kiln from the port field"]


def test_spec_changes_lists_each_differing_field() -> None:
    spec = parse_spec(BASE + "environments: {production: {env: {LOG_LEVEL: warn}}}\n")
    changes = spec_changes(for_environment(spec, "staging"), for_environment(spec, "production"))
    assert [(c.path, c.before, c.after) for c in changes] == [
        ("environment", "staging", "production"),
        ("env.LOG_LEVEL", "info", "warn"),
    ]
