"""Blue-green and canary rollouts on a real engine and NGINX, judged on real traffic: a user
steers them (promote, abort, rollback) while load runs, and no request fails but the bad
release's own 500s."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest

from tests.e2e.harness import KilnHarness, wait_until
from tests.e2e.load import LoadClient

pytestmark = pytest.mark.integration


def spec(
    app: str,
    tag: str,
    *,
    deploy: str = "",
    instances: int = 2,
    host: str | None = None,
    deadline: str = "30s",
) -> str:
    return f"""\
app: {app}
image: {tag}
port: 8080
instances: {instances}
health:
  http: /healthz
  interval: 500ms
  timeout: 500ms
routes:
  - host: {host or f"{app}.test"}
deploy:
  deadline: {deadline}
  drain: 5s
  {deploy}
stop_grace: 2s
"""


CANARY_HOLD = "strategy: canary\n  steps: [{weight: 25}]\n  canary_instances: 1"


def rollout(kiln: KilnHarness, app: str) -> dict[str, object]:
    response = kiln.api("GET", f"/v1/apps/dev/{app}/rollout")
    response.raise_for_status()
    return dict(response.json())


def steer(kiln: KilnHarness, app: str, verb: str, **body: object) -> httpx.Response:
    response = kiln.api("POST", f"/v1/apps/dev/{app}/rollout/{verb}", json=body)
    assert response.status_code == 200, response.text
    return response


def shares(kiln: KilnHarness, app: str) -> dict[int, int]:
    view = rollout(kiln, app)
    return {
        int(g["release"]): int(g["share"])  # type: ignore[index]
        for g in view["groups"]  # type: ignore[attr-defined]
        if g["share"] is not None  # type: ignore[index]
    }


def settled(kiln: KilnHarness, app: str, timeout: float = 60) -> dict[str, object]:
    return dict(
        wait_until(
            lambda: (s := kiln.status(app))["rollout"] is None and s,
            timeout=timeout,
            interval=0.1,
            what=f"{app}'s rollout to end",
        )
    )


def first_release(
    kiln: KilnHarness, app: str, tag: str = "kiln-hello:v1", **kwargs: object
) -> None:
    result = kiln.deploy(spec(app, tag, **kwargs), "--wait")  # type: ignore[arg-type]
    assert result.returncode == 0, result.stdout + result.stderr
    kiln.wait_ready(app, int(kwargs.get("instances", 2)), release=1)  # type: ignore[call-overload]


def version_of(response: httpx.Response) -> str:
    for marker in ("v5", "v2", "v1"):
        if marker in response.text:
            return marker
    return "other"


def test_canary_of_a_good_release_is_promoted_through_every_step_on_its_traffic(
    kiln: KilnHarness,
) -> None:
    app = "cgood"
    first_release(kiln, app)
    steps = (
        "strategy: canary\n  steps: [{weight: 20, pause: 2s}, {weight: 50, pause: 2s}]\n"
        "  analysis: {interval: 2s, min_requests: 5, max_error_rate: 5%}"
    )
    with LoadClient(
        port=kiln.http_port,
        host_header=f"{app}.test",
        keep_alive=True,
        markers=("v2", "v1"),
        rate=100,
    ) as load:
        load.wait_for_requests(20)
        assert kiln.deploy(spec(app, "kiln-hello:v2", deploy=steps)).returncode == 0
        status = settled(kiln, app)
        load.wait_for_requests(load.report.requests + 50)
    assert status["target_release"] == 2 and status["stable_release"] == 2
    assert load.report.failures == 0, load.report.errors
    assert load.report.bodies["v1"] > 0 and load.report.bodies["v2"] > 0
    events = kiln.cli_json("events", app, "--limit", "1000")
    text = " ".join(e["reason"] for e in events)
    assert "canary step 1/2" in text and "canary step 2/2" in text
    assert "analysis window" in text and "pass" in text
    assert all("v2" in kiln.get(f"{app}.test").text for _ in range(10))


def test_canary_of_the_flaky_release_is_aborted_by_analysis_naming_the_error_rate(
    kiln: KilnHarness,
) -> None:
    app = "cflaky"
    first_release(kiln, app)
    steps = (
        "strategy: canary\n  steps: [{weight: 50, pause: 60s}]\n"
        "  analysis: {interval: 2s, min_requests: 20, max_error_rate: 1%, failure_limit: 2}"
    )
    with LoadClient(
        port=kiln.http_port,
        host_header=f"{app}.test",
        keep_alive=True,
        markers=("v5", "v1"),
        rate=150,
    ) as load:
        load.wait_for_requests(20)
        assert kiln.deploy(spec(app, "kiln-hello:flaky", deploy=steps), "--no-wait").returncode == 0
        status = settled(kiln, app)
        after = load.report.requests
        load.wait_for_requests(after + 100)
    assert status["target_release"] == 1
    failed = [
        e for e in kiln.cli_json("events", app, "--limit", "1000") if e["kind"] == "rollout.failed"
    ]
    assert failed and "error rate" in failed[-1]["reason"] and "> 1.0%" in failed[-1]["reason"]
    # Only the bad release's own 500s failed; nothing else.
    other_errors = {k: v for k, v in load.report.errors.items() if "flaky failure" not in k}
    assert not other_errors, load.report.errors
    assert all("v1" in kiln.get(f"{app}.test").text for _ in range(20))
    view = rollout(kiln, app)
    assert view["held_release"] == 2  # kept for inspection, out of the router


def test_blue_green_preview_promote_and_rollback_inside_the_window_fail_no_request(
    kiln: KilnHarness,
) -> None:
    app = "bg"
    first_release(kiln, app, instances=2)
    clients = [
        LoadClient(
            port=kiln.http_port,
            host_header=f"{app}.test",
            keep_alive=keep_alive,
            markers=("v2", "v1"),
            rate=100,
        )
        for keep_alive in (True, False)
    ]
    for client in clients:
        client.__enter__()
    try:
        for client in clients:
            client.wait_for_requests(20)
        bg = "strategy: blue-green\n  rollback_window: 5m"
        # kiln deploy watches until the rollout waits for a person, then says how to go on.
        waiting = kiln.deploy(spec(app, "kiln-hello:v2", deploy=bg))
        assert waiting.returncode == 0, waiting.stdout + waiting.stderr
        assert "kiln promote bg" in waiting.stdout
        wait_until(
            lambda: (
                shares(kiln, app) == {1: 100, 2: 0}
                and sum(1 for g in rollout(kiln, app)["groups"] if g["ready"] == 2) == 2
            ),  # type: ignore[attr-defined]
            timeout=30,
            what="green ready on preview",
        )

        # The preview reaches the new release before it takes any traffic.
        assert "v2" in kiln.get(f"{app}.preview.dev.localhost").text
        preview = httpx.get(
            f"http://127.0.0.1:{kiln.http_port}/",
            headers={"Host": f"{app}.test", "X-Kiln-Preview": "1"},
            timeout=5,
        )
        assert "v2" in preview.text
        assert all("v1" in kiln.get(f"{app}.test").text for _ in range(10))

        steer(kiln, app, "promote")
        settled(kiln, app)
        assert all("v2" in kiln.get(f"{app}.test").text for _ in range(10))
        started = {c.id for c in kiln.containers(app)}

        back = kiln.cli("rollback", app)
        assert back.returncode == 0, back.stdout + back.stderr
        settled(kiln, app)
        assert all("v1" in kiln.get(f"{app}.test").text for _ in range(10))
        assert {c.id for c in kiln.containers(app)} == started  # a router switch, no new instance
        for client in clients:
            client.wait_for_requests(client.report.requests + 30)
    finally:
        for client in clients:
            client.stop()
    for client in clients:
        assert client.report.failures == 0, client.report.errors
        assert client.report.closed_by_server == 0
    assert [r["number"] for r in kiln.cli_json("releases", app)] == [1, 2]


def test_canary_header_override_sticky_cookie_and_exact_share(kiln: KilnHarness) -> None:
    app = "cshare"
    first_release(kiln, app)
    assert kiln.deploy(spec(app, "kiln-hello:v2", deploy=CANARY_HOLD), "--no-wait").returncode == 0
    wait_until(lambda: shares(kiln, app) == {1: 75, 2: 25}, timeout=30, what="25% canary")

    url = f"http://127.0.0.1:{kiln.http_port}/"
    host = {"Host": f"{app}.test"}
    with httpx.Client(timeout=5) as client:
        forced = [client.get(url, headers={**host, "X-Kiln-Canary": "always"}) for _ in range(10)]
        never = [client.get(url, headers={**host, "X-Kiln-Canary": "never"}) for _ in range(10)]
    assert {version_of(r) for r in forced} == {"v2"}
    assert {version_of(r) for r in never} == {"v1"}

    # A client that got the canary keeps it (cookie) while the rollout runs.
    with httpx.Client(timeout=5) as sticky:
        for _ in range(40):
            if version_of(sticky.get(url, headers=host)) == "v2":
                break
        assert "kiln_canary" in sticky.cookies
        assert {version_of(sticky.get(url, headers=host)) for _ in range(20)} == {"v2"}

    counts: Counter[str] = Counter()
    started = time.monotonic()
    with httpx.Client(timeout=5) as client:
        for _ in range(2000):
            # Each request as a new visitor: a kept kiln_canary cookie would pin the release.
            client.cookies.clear()
            counts[version_of(client.get(url, headers=host))] += 1
            assert time.monotonic() - started < 120
    share = counts["v2"] / 2000 * 100
    assert 20 <= share <= 30, counts

    steer(kiln, app, "abort")
    settled(kiln, app)
    assert all("v1" in kiln.get(f"{app}.test").text for _ in range(10))


def test_routes_follow_the_serving_release_after_an_automatic_rollback(
    kiln: KilnHarness,
) -> None:
    app = "routes"
    first_release(kiln, app, host="a.test")
    broken = spec(app, "kiln-hello:broken", host="b.test", deadline="4s")
    result = kiln.deploy(broken, "--wait")
    assert result.returncode == 3, result.stdout + result.stderr
    settled(kiln, app)
    assert "v1" in kiln.get("a.test").text
    assert kiln.get("b.test").status_code == 404
    status = kiln.status(app)
    assert status["urls"][0].startswith("http://a.test")
