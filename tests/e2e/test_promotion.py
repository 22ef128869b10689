"""Environments and promotion on the real engine and NGINX: the CI recipe
(examples/ci/pipeline.sh) builds, deploys to staging, smoke-checks through NGINX and promotes the
same digest to production; a gate refuses with its reasons and nothing changes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import REPO, KilnHarness, wait_until
from tests.e2e.load import LoadClient

pytestmark = pytest.mark.integration

PIPELINE = REPO / "examples" / "ci" / "pipeline.sh"
SETTINGS = """\
environments:
  order: [dev, staging, production]
  gates:
    staging: {min_soak: 1h, approval: required}
    production: {min_soak: 0s}
"""


def spec(app: str, image: str = "kiln-hello:v1") -> str:
    # No routes: each environment gets its own default host, <app>.<env>.localhost.
    return f"""\
app: {app}
image: {image}
port: 8080
instances: 1
env: {{GREETING: staging}}
health: {{http: /healthz, interval: 1s, timeout: 500ms}}
deploy: {{deadline: 30s, drain: 300ms}}
stop_grace: 2s
environments:
  production:
    instances: 2
    env: {{GREETING: production}}
"""


@pytest.fixture(scope="module")
def kiln(dockerd, hello_images, tmp_path_factory) -> Iterator[KilnHarness]:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("kiln-promote-home")
    (home / "settings.yaml").write_text(SETTINGS)
    harness = KilnHarness(home, dockerd.docker_host)
    try:
        harness.start()
        yield harness
    finally:
        harness.teardown()


def app_status(kiln: KilnHarness, key: str) -> dict:  # type: ignore[type-arg]
    response = kiln.api("GET", f"/v1/apps/{key}")
    response.raise_for_status()
    return dict(response.json())


def releases(kiln: KilnHarness, key: str) -> list[dict]:  # type: ignore[type-arg]
    response = kiln.api("GET", f"/v1/apps/{key}/releases")
    response.raise_for_status()
    return list(response.json())


def test_the_ci_pipeline_builds_deploys_staging_smoke_checks_and_promotes_the_same_digest(
    kiln: KilnHarness, tmp_path: Path
) -> None:
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "kiln.yaml").write_text(spec("shop"))
    image = "shop:ci-42"
    env = {
        **kiln.env,
        "KILN": f"{sys.executable} -m kiln.cli.main",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "VERSION": "ci-42",
        "BUILD_CMD": f"{REPO}/examples/hello/build.sh v4 healthy {image}",
        "SMOKE_PATH": "/version",
    }
    result = subprocess.run(
        ["sh", str(PIPELINE), str(folder / "kiln.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr + kiln.server_log()
    assert "v4" in result.stdout  # the smoke check's answer

    staging = releases(kiln, "staging/shop")[-1]
    production = releases(kiln, "production/shop")[-1]
    assert production["digest"] == staging["digest"] and production["image"] == image
    assert production["origin"] == "promotion"
    assert production["spec"]["instances"] == 2 and staging["spec"]["instances"] == 1
    assert production["spec"]["env"] == {"GREETING": "production"}
    assert staging["spec"]["env"] == {"GREETING": "staging"}

    # Production serves the promoted release through NGINX, on its own host.
    wait_until(
        lambda: app_status(kiln, "production/shop")["ready"] == 2,
        timeout=30,
        what="production's two instances",
    )
    answer = kiln.get("shop.production.localhost", "/version")
    assert answer.status_code == 200 and answer.text.strip() == "v4"

    # The diff between the environments is the overrides only, with the same digest.
    diff = kiln.cli_json("diff", "shop", "--env", "staging", "--to", "production")
    assert diff["digest_changed"] is False
    assert [c["path"] for c in diff["changes"]] == ["environment", "env.GREETING", "instances"]

    # The same pipeline again: production already runs it, a clear no-op.
    again = kiln.cli("promote", "shop", "--from", "staging", "--to", "production")
    assert again.returncode == 0 and "nothing to promote" in again.stdout


def test_a_gate_refuses_with_every_reason_and_nothing_changes(kiln: KilnHarness) -> None:
    result = kiln.deploy(spec("cart"), "-e", "dev", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr

    dry = kiln.cli("promote", "cart", "--from", "dev", "--to", "staging", "--dry-run")
    assert dry.returncode == 8, dry.stdout + dry.stderr  # it would be refused
    assert "✗ soak" in dry.stdout and "✗ approval" in dry.stdout and "✓ serving" in dry.stdout

    refused = kiln.cli("promote", "cart", "--from", "dev", "--to", "staging")
    assert refused.returncode == 8, refused.stdout + refused.stderr
    assert "soak: live and healthy" in refused.stderr and "of the 1h staging requires" in (
        refused.stderr
    )
    assert (
        "approval: staging requires an approval: `kiln approve cart --env staging "
        "--release 1`" in refused.stderr
    )
    assert kiln.api("GET", "/v1/apps/staging/cart").status_code == 404  # nothing changed

    approved = kiln.cli("approve", "cart", "--env", "staging", "--release", "1", "-m", "qa ok")
    assert approved.returncode == 0, approved.stderr
    still = kiln.cli("promote", "cart", "--from", "dev", "--to", "staging")
    assert still.returncode == 8 and "approval" not in still.stderr and "soak" in still.stderr

    skipped = kiln.cli("promote", "cart", "--from", "dev", "--to", "production")
    assert skipped.returncode == 2 and "promote dev → staging first" in skipped.stderr


CANARY_IN_PRODUCTION = """\
    deploy:
      strategy: canary
      steps: [{weight: 20, pause: 2s}, {weight: 50, pause: 2s}]
      deadline: 30s
      drain: 300ms
"""


def test_a_promotion_into_a_canary_environment_walks_its_steps_on_the_same_digest(
    kiln: KilnHarness,
) -> None:
    app, host = "till", "till.production.localhost"

    def with_canary(image: str) -> str:
        return spec(app, image) + CANARY_IN_PRODUCTION

    first = kiln.deploy(with_canary("kiln-hello:v1"), "-e", "staging", "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    promoted = kiln.cli("promote", app, "--from", "staging", "--to", "production", "--wait")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr + kiln.server_log()
    wait_until(
        lambda: app_status(kiln, f"production/{app}")["ready"] == 2,
        timeout=30,
        what="production's first release",
    )

    second = kiln.deploy(with_canary("kiln-hello:v2"), "-e", "staging", "--wait")
    assert second.returncode == 0, second.stdout + second.stderr
    with LoadClient(
        port=kiln.http_port, host_header=host, keep_alive=True, markers=("v2", "v1"), rate=50
    ) as load:
        load.wait_for_requests(20)
        canary = kiln.cli("promote", app, "--from", "staging", "--to", "production", "--wait")
        assert canary.returncode == 0, canary.stdout + canary.stderr + kiln.server_log()
        load.wait_for_requests(load.report.requests + 20)

    # The promoted release is staging's digest, rolled out with production's strategy.
    staging = releases(kiln, f"staging/{app}")[-1]
    production = releases(kiln, f"production/{app}")[-1]
    assert production["number"] == 2 and production["origin"] == "promotion"
    assert production["digest"] == staging["digest"] and production["image"] == "kiln-hello:v2"
    assert production["spec"]["deploy"]["strategy"] == "canary"
    assert staging["spec"]["deploy"]["strategy"] == "rolling"

    events = kiln.cli_json("events", app, "--env", "production", "--limit", "1000")
    steps = [e for e in events if "canary step" in e["reason"] and e.get("release") == 2]
    said = " ".join(e["reason"] for e in steps)
    assert "canary step 1/2" in said and "canary step 2/2" in said, said

    # It reached 100 %: production serves only the promoted release, with both instances.
    status = app_status(kiln, f"production/{app}")
    assert status["stable_release"] == 2 and status["target_release"] == 2
    assert status["rollout"] is None and status["ready"] == 2
    assert all(kiln.get(host, "/version").text.strip() == "v2" for _ in range(10))
    assert load.report.failures == 0, load.report.errors
    assert load.report.bodies["v1"] > 0 and load.report.bodies["v2"] > 0
