"""What a four-line spec means, and which changes make a new release."""

from __future__ import annotations

from typing import Any

import pytest

from kiln.spec import Health, Probe, Route, Strategy, parse_spec, spec_hash, validate_spec

FOUR_LINES = """\
app: web
image: nginx:1.27
port: 80
instances: 3
"""


def test_four_line_spec_deploys_a_health_checked_routed_rolling_app() -> None:
    spec = parse_spec(FOUR_LINES)

    assert (spec.key, spec.instances, spec.port) == ("dev/web", 3, 80)
    assert spec.effective_routes() == [Route(host="web.dev.localhost", path="/")]
    assert spec.effective_health() == Health(tcp=True)
    assert spec.deploy.strategy is Strategy.ROLLING
    assert (spec.deploy.max_surge, spec.deploy.max_unavailable) == (1, 0)
    assert (spec.deploy.deadline, spec.deploy.drain, spec.stop_grace) == (120.0, 30.0, 10.0)
    assert spec.security.read_only and spec.security.tmpfs == ["/tmp"]
    assert spec.env == {} and spec.command is None


def test_worker_without_a_port_has_no_routes_and_no_probe() -> None:
    spec = parse_spec("app: worker\nimage: busybox\ncommand: [sleep, '3600']\n")

    assert spec.effective_routes() == []
    assert spec.effective_health() is None


def test_readiness_and_liveness_default_to_the_main_probe() -> None:
    spec = validate_spec(
        {
            "app": "web",
            "image": "x",
            "port": 80,
            "health": {"http": "/healthz", "interval": "5s", "liveness": {"tcp": True}},
        }
    )
    health = spec.effective_health()
    assert health is not None

    assert health.readiness_probe() == Probe(http="/healthz", interval=5.0)
    assert health.liveness_probe() == Probe(tcp=True)
    assert health.readiness_probe().kind == "http"


def test_yaml_scalars_become_strings_and_names_are_normalised() -> None:
    spec = parse_spec(
        FOUR_LINES
        + "env:\n  DEBUG: true\n  WORKERS: 4\n  RATIO: 0.5\n"
        + "routes:\n  - host: Shop.Example.COM\n"
        + "security:\n  cap_add: [CAP_NET_BIND_SERVICE]\n"
    )

    assert spec.env == {"DEBUG": "true", "WORKERS": "4", "RATIO": "0.5"}
    assert spec.routes == [Route(host="shop.example.com", path="/")]
    assert spec.security.cap_add == ["NET_BIND_SERVICE"]


def test_spec_hash_ignores_the_instance_count() -> None:
    assert spec_hash(parse_spec(FOUR_LINES)) == spec_hash(
        parse_spec(FOUR_LINES.replace("instances: 3", "instances: 9"))
    )


@pytest.mark.parametrize(
    "change",
    [
        {"image": "nginx:1.28"},
        {"env": {"MODE": "fast"}},
        {"port": 8080},
        {"command": ["nginx", "-g", "daemon off;"]},
        {"resources": {"memory": "64Mi"}},
        {"health": {"http": "/healthz"}},
        {"routes": [{"path": "/shop"}]},
        {"deploy": {"strategy": "recreate"}},
        {"stop_grace": "30s"},
        {"security": {"read_only": False}},
        {"environment": "staging"},
    ],
)
def test_spec_hash_changes_with_what_defines_a_release(change: dict[str, Any]) -> None:
    base = {"app": "web", "image": "nginx:1.27", "port": 80, "instances": 3}

    assert spec_hash(validate_spec({**base, **change})) != spec_hash(validate_spec(base))


def test_spec_hash_does_not_depend_on_how_a_value_was_written() -> None:
    written = validate_spec(
        {"app": "web", "image": "x", "env": {"B": "2", "A": "1"}, "stop_grace": "1m"}
    )
    other = validate_spec({"app": "web", "image": "x", "env": {"A": 1, "B": 2}, "stop_grace": 60})

    assert spec_hash(written) == spec_hash(other)
    assert spec_hash(written).startswith("sha256:") and len(spec_hash(written)) == 7 + 64
