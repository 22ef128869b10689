"""Rollout endpoints over a FakeService: the view, promote, pause, resume, abort, retry."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kiln.controller.views import ReleaseTrafficView
from kiln.model import AppKey

from .fake_service import FakeService

WEB = AppKey("dev", "web")

CANARY_SPEC = """\
app: web
environment: dev
image: example/web:1
port: 8080
instances: 4
deploy:
  strategy: canary
  steps:
    - weight: 10
    - weight: 50
"""
BLUE_GREEN_SPEC = """\
app: web
environment: dev
image: example/web:1
port: 8080
instances: 2
deploy:
  strategy: blue-green
"""
ROLLING_SPEC = "app: web\nenvironment: dev\nimage: example/web:1\nport: 8080\ninstances: 2\n"
ROLLOUT = "/v1/apps/dev/web/rollout"


async def deploy(client: httpx.AsyncClient, spec: str) -> dict[str, Any]:
    response = await client.post("/v1/deploy", json={"spec": spec})
    assert response.status_code == 201, response.text
    return response.json()


async def reads(client: httpx.AsyncClient, count: int) -> dict[str, Any]:
    """Read the rollout ``count`` times (the fake moves one round per read); the last view."""
    body: dict[str, Any] = {}
    for _ in range(count):
        response = await client.get(ROLLOUT)
        assert response.status_code == 200, response.text
        body = response.json()
    return body


async def second_release(client: httpx.AsyncClient, spec: str) -> dict[str, Any]:
    """Release 1 live, release 2 rolling out with its instances running: the view."""
    await deploy(client, spec)
    first = await reads(client, 3)
    assert first["rollout"]["state"] == "succeeded"
    await deploy(client, spec.replace("web:1", "web:2"))
    return await reads(client, 2)


def group(view: dict[str, Any], role: str) -> dict[str, Any]:
    return next(g for g in view["groups"] if g["role"] == role)


async def test_rollout_view_of_a_canary_shows_its_step_groups_and_traffic(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    await second_release(client, CANARY_SPEC)
    service.traffic[WEB] = [
        ReleaseTrafficView(release=1, requests=900, errors=1, error_rate=0.0011, p95_ms=41.0),
        ReleaseTrafficView(release=2, requests=100, errors=0, error_rate=0.0, p95_ms=38.5),
    ]
    view = await reads(client, 1)
    assert (view["environment"], view["app"], view["active"]) == ("dev", "web", True)
    rollout = view["rollout"]
    assert (rollout["to_release"], rollout["from_release"]) == (2, 1)
    assert (rollout["strategy"], rollout["kind"], rollout["step"]) == ("canary", "deploy", 0)
    assert rollout["state"] == "in_progress"
    assert view["steps"] == [10, 50]
    assert (group(view, "stable")["release"], group(view, "stable")["share"]) == (1, 90)
    assert (group(view, "canary")["release"], group(view, "canary")["share"]) == (2, 10)
    assert "canary step 1/2: 10% to release 2" in view["status"]
    assert view["traffic"][1] == {
        "release": 2,
        "requests": 100,
        "errors": 0,
        "error_rate": 0.0,
        "p95_ms": 38.5,
    }
    assert (view["warm_release"], view["held_release"]) == (None, None)


async def test_app_status_carries_the_rollout_kind_and_progress(
    client: httpx.AsyncClient,
) -> None:
    await second_release(client, CANARY_SPEC)
    rollout = (await client.get("/v1/apps/dev/web")).json()["rollout"]
    for name, value in (
        ("kind", "deploy"),
        ("step", 0),
        ("paused", False),
        ("pause_reason", ""),
        ("promote_requested", False),
        ("failing", 0),
        ("inconclusive", 0),
        ("windows", 0),
        ("last_verdict", ""),
    ):
        assert rollout[name] == value, name


async def test_promote_moves_a_canary_one_step_then_full_sends_all_traffic(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    await second_release(client, CANARY_SPEC)
    response = await client.post(f"{ROLLOUT}/promote", json={"full": False})
    assert response.status_code == 200
    assert response.json()["rollout"]["promote_requested"] is True
    view = await reads(client, 1)
    assert view["rollout"]["step"] == 1
    assert group(view, "canary")["share"] == 50
    assert (await client.post(f"{ROLLOUT}/promote", json={"full": True})).status_code == 200
    view = await reads(client, 1)
    assert view["active"] is False
    assert view["rollout"]["state"] == "succeeded"
    assert view["warm_release"] == 1
    assert view["warm_until"] is not None
    assert service.apps[WEB].stable == 2
    assert [e.kind for e in service.event_log].count("rollout.promoted") == 2


async def test_promote_without_a_body_is_one_step(client: httpx.AsyncClient) -> None:
    await second_release(client, CANARY_SPEC)
    response = await client.post(f"{ROLLOUT}/promote")
    assert response.status_code == 200, response.text
    assert (await reads(client, 1))["rollout"]["step"] == 1


async def test_promote_with_a_bad_body_is_422_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    await second_release(client, CANARY_SPEC)
    for body in ({"full": "perhaps"}, {"full": True, "fast": True}):
        response = await client.post(f"{ROLLOUT}/promote", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"]["type"] == "invalid_input"
    view = await reads(client, 1)
    assert view["rollout"]["promote_requested"] is False
    assert view["rollout"]["step"] == 0


async def test_promote_switches_a_blue_green_rollout(client: httpx.AsyncClient) -> None:
    view = await second_release(client, BLUE_GREEN_SPEC)
    assert group(view, "green")["preview"] is True
    assert (await reads(client, 1))["active"] is True  # waits for promote
    await client.post(f"{ROLLOUT}/promote", json={})
    view = await reads(client, 1)
    assert view["rollout"]["state"] == "succeeded"
    assert view["rollout"]["step"] == 1
    assert view["warm_release"] == 1


async def test_pause_holds_a_canary_and_resume_lets_it_go_on(
    client: httpx.AsyncClient,
) -> None:
    await second_release(client, CANARY_SPEC.replace("weight: 10", "weight: 10\n      pause: 60"))
    response = await client.post(f"{ROLLOUT}/pause", headers={"X-Kiln-Actor": "ann@laptop"})
    assert response.status_code == 200
    rollout = response.json()["rollout"]
    assert rollout["paused"] is True
    assert "ann@laptop" in rollout["pause_reason"]
    assert (await reads(client, 3))["rollout"]["step"] == 0  # a step with a pause, held
    assert (await client.post(f"{ROLLOUT}/pause")).status_code == 200  # again: no change
    resumed = (await client.post(f"{ROLLOUT}/resume")).json()["rollout"]
    assert (resumed["paused"], resumed["pause_reason"]) == (False, "")
    assert (await reads(client, 1))["rollout"]["step"] == 1


async def test_abort_sends_traffic_back_and_holds_the_release(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    await second_release(client, CANARY_SPEC)
    response = await client.post(f"{ROLLOUT}/abort")
    assert response.status_code == 200
    view = response.json()
    assert view["active"] is False
    assert view["rollout"]["state"] == "aborted"
    assert "traffic back to release 1" in view["rollout"]["reason"]
    assert "kept for inspection" in view["rollout"]["reason"]
    assert view["held_release"] == 2
    assert group(view, "held")["share"] == 0
    status = (await client.get("/v1/apps/dev/web")).json()
    assert status["target_release"] == 1
    assert any(i["release"] == 2 for i in status["instances"])  # still there to inspect
    assert service.event_log[-1].kind == "rollout.aborted"


async def test_retry_starts_an_aborted_rollout_again_from_its_first_step(
    client: httpx.AsyncClient,
) -> None:
    await second_release(client, CANARY_SPEC)
    aborted = (await client.post(f"{ROLLOUT}/abort")).json()["rollout"]
    assert (await client.post(f"{ROLLOUT}/promote")).status_code == 409  # nothing to promote
    response = await client.post(f"{ROLLOUT}/retry")
    assert response.status_code == 200
    view = response.json()
    rollout = view["rollout"]
    assert view["active"] is True
    assert rollout["id"] != aborted["id"]
    assert (rollout["kind"], rollout["to_release"], rollout["step"]) == ("retry", 2, 0)
    assert view["held_release"] is None
    assert (await client.get("/v1/apps/dev/web")).json()["target_release"] == 2


async def test_a_failing_canary_fails_on_its_analysis_and_is_held(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    spec = CANARY_SPEC + "  analysis:\n    failure_limit: 2\n"
    service.failing_images.add("example/web:2")
    await second_release(client, spec)
    first = await reads(client, 1)
    assert first["rollout"]["last_verdict"].startswith("fail:")
    assert (first["rollout"]["failing"], first["rollout"]["windows"]) == (1, 1)
    view = await reads(client, 1)
    assert view["rollout"]["state"] == "failed"
    assert "analysis failed 2 window(s)" in view["rollout"]["reason"]
    assert view["held_release"] == 2
    assert (await client.post(f"{ROLLOUT}/retry")).status_code == 200


@pytest.mark.parametrize("verb", ["promote", "pause", "resume"])
async def test_steering_a_rolling_rollout_is_409_it_moves_on_by_itself(
    client: httpx.AsyncClient, verb: str
) -> None:
    await deploy(client, ROLLING_SPEC)
    response = await client.post(f"{ROLLOUT}/{verb}")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["type"] == "conflict"
    assert "moves on by itself" in error["message"]
    assert (await reads(client, 1))["rollout"]["paused"] is False


@pytest.mark.parametrize("verb", ["promote", "pause", "resume", "abort"])
async def test_steering_without_a_rollout_in_progress_is_409(
    client: httpx.AsyncClient, verb: str
) -> None:
    await deploy(client, ROLLING_SPEC)
    await reads(client, 3)
    response = await client.post(f"{ROLLOUT}/{verb}")
    assert response.status_code == 409
    assert "no rollout in progress" in response.json()["error"]["message"]


async def test_retry_is_409_while_rolling_out_and_after_a_success(
    client: httpx.AsyncClient,
) -> None:
    await deploy(client, ROLLING_SPEC)
    busy = await client.post(f"{ROLLOUT}/retry")
    assert busy.status_code == 409
    assert "kiln abort web" in busy.json()["error"]["message"]
    await reads(client, 3)
    done = await client.post(f"{ROLLOUT}/retry")
    assert done.status_code == 409
    assert "nothing to retry" in done.json()["error"]["message"]


async def test_the_view_of_an_app_never_deployed_through_a_rollout_is_empty(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    await deploy(client, ROLLING_SPEC)
    service.apps[WEB].rollouts.clear()
    view = await reads(client, 1)
    assert (view["rollout"], view["active"], view["status"]) == (None, False, "no rollout yet")


async def test_unknown_app_is_404_on_every_rollout_endpoint(client: httpx.AsyncClient) -> None:
    ghost = "/v1/apps/dev/ghost/rollout"
    requests = [("GET", ghost, None)] + [
        ("POST", f"{ghost}/{verb}", None) for verb in ("pause", "resume", "abort", "retry")
    ]
    requests.append(("POST", f"{ghost}/promote", {"full": True}))
    for method, path, body in requests:
        response = await client.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["type"] == "not_found"


async def test_openapi_documents_404_and_409_of_the_rollout_endpoints(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    assert (
        "RolloutViewOut"
        in paths[ROLLOUT.replace("dev/web", "{env}/{app}")]["get"]["responses"]["200"]["content"][
            "application/json"
        ]["schema"]["$ref"]
    )
    for verb in ("promote", "pause", "resume", "abort", "retry"):
        operation = paths[f"/v1/apps/{{env}}/{{app}}/rollout/{verb}"]["post"]
        assert operation["summary"]
        assert {"404", "409"} <= set(operation["responses"]), verb
        assert "rollout" in operation["responses"]["409"]["description"], verb
    promote = paths["/v1/apps/{env}/{app}/rollout/promote"]["post"]
    assert "requestBody" in promote
    for name in ("RolloutViewOut", "GroupOut", "ReleaseTrafficOut", "PromoteRequest"):
        assert name in document["components"]["schemas"], name
