"""App endpoints over a FakeService: happy paths and the one error → status mapping."""

from __future__ import annotations

import httpx

from kiln.errors import DriverUnavailable, PermanentFailure
from kiln.model import AppKey

from .conftest import WEB_SPEC
from .fake_service import FakeService

WEB = AppKey("dev", "web")


async def deploy(client: httpx.AsyncClient, spec: str = WEB_SPEC, **extra: str) -> dict:
    response = await client.post("/v1/deploy", json={"spec": spec, **extra})
    assert response.status_code in (200, 201), response.text
    return response.json()


async def test_deploy_creates_a_release_and_starts_its_rollout(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/deploy", json={"spec": WEB_SPEC, "message": "first"}, headers={"X-Kiln-Actor": "ann"}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["changed"] is True
    assert body["release"]["number"] == 1
    # The header is only a claim: the record says who was verified (the token) first.
    assert body["release"]["created_by"] == "local-token, ann (claimed)"
    assert body["release"]["message"] == "first"
    assert body["rollout"]["to_release"] == 1
    assert body["rollout"]["state"] == "in_progress"


async def test_deploying_the_same_spec_again_is_unchanged_with_200(
    client: httpx.AsyncClient,
) -> None:
    await deploy(client)
    response = await client.post("/v1/deploy", json={"spec": WEB_SPEC})
    assert response.status_code == 200
    assert response.json()["changed"] is False


async def test_without_a_claim_the_actor_is_the_token(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    await deploy(client)
    assert service.calls == [("deploy", "local-token")]


async def test_invalid_spec_is_422_with_every_problem(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    spec = "app: Web\nimage: ''\ninstances: -1\nimagee: typo\n"
    response = await client.post("/v1/deploy", json={"spec": spec})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "spec_invalid"
    joined = "\n".join(error["problems"])
    for field in ("app", "image", "instances", "imagee"):
        assert any(p.startswith(f"{field}:") for p in error["problems"]), joined
    assert service.apps == {}


async def test_invalid_request_body_is_422_naming_each_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/deploy", json={"message": 3, "extra": True})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_input"
    assert any(p.startswith("body.spec:") for p in error["problems"])
    assert any(p.startswith("body.message:") for p in error["problems"])
    assert any(p.startswith("body.extra:") for p in error["problems"])


async def test_scale_below_zero_is_422_with_the_field_path(client: httpx.AsyncClient) -> None:
    await deploy(client)
    response = await client.post("/v1/apps/dev/web/scale", json={"instances": -1})
    assert response.status_code == 422
    assert response.json()["error"]["problems"][0].startswith("body.instances:")


async def test_a_path_that_is_not_an_app_name_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/apps/dev/Not_An_App")
    assert response.status_code == 422
    assert response.json()["error"]["problems"][0].startswith("path.app:")


async def test_unknown_app_is_404_everywhere(client: httpx.AsyncClient) -> None:
    for method, path, body in [
        ("GET", "/v1/apps/dev/ghost", None),
        ("GET", "/v1/apps/dev/ghost/releases", None),
        ("POST", "/v1/apps/dev/ghost/scale", {"instances": 1}),
        ("POST", "/v1/apps/dev/ghost/stop", None),
        ("POST", "/v1/apps/dev/ghost/rollback", {}),
        ("DELETE", "/v1/apps/dev/ghost", None),
        ("GET", "/v1/apps/dev/ghost/logs", None),
    ]:
        response = await client.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["type"] == "not_found"


async def test_unknown_route_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


async def test_status_and_list_show_the_app(client: httpx.AsyncClient) -> None:
    await deploy(client)
    one = (await client.get("/v1/apps/dev/web")).json()
    assert (one["environment"], one["app"], one["scale"]) == ("dev", "web", 2)
    assert one["state"] == "deploying"
    assert [a["app"] for a in (await client.get("/v1/apps")).json()] == ["web"]


async def test_rollback_makes_a_new_release_from_the_previous_one(
    client: httpx.AsyncClient,
) -> None:
    await deploy(client)
    await deploy(client, WEB_SPEC.replace("web:1", "web:2"))
    response = await client.post("/v1/apps/dev/web/rollback", json={"message": "bad 2"})
    assert response.status_code == 201
    release = response.json()["release"]
    assert (release["number"], release["origin"], release["rollback_of"]) == (3, "rollback", 1)
    assert release["image"] == "example/web:1"


async def test_rollback_with_nothing_to_go_back_to_is_409(client: httpx.AsyncClient) -> None:
    await deploy(client)
    response = await client.post("/v1/apps/dev/web/rollback", json={})
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "conflict"


async def test_rollback_to_a_missing_release_is_404(client: httpx.AsyncClient) -> None:
    await deploy(client)
    response = await client.post("/v1/apps/dev/web/rollback", json={"to": 9})
    assert response.status_code == 404


async def test_scale_stop_and_destroy(client: httpx.AsyncClient, service: FakeService) -> None:
    await deploy(client)
    assert (await client.post("/v1/apps/dev/web/scale", json={"instances": 5})).json()["scale"] == 5
    assert (await client.post("/v1/apps/dev/web/stop")).json()["state"] == "stopped"
    response = await client.delete("/v1/apps/dev/web")
    assert response.status_code == 204
    assert response.content == b""
    assert WEB not in service.apps
    assert (await client.get("/v1/apps/dev/web")).status_code == 404


async def test_destroy_waits_for_the_instances_only_when_asked(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    await deploy(client)
    response = await client.delete("/v1/apps/dev/web", params={"wait": "true"})
    assert response.status_code == 204
    assert service.calls[-1][0] == "destroy --wait"
    await deploy(client)
    assert (await client.delete("/v1/apps/dev/web")).status_code == 204
    assert service.calls[-1][0] == "destroy"
    bad = await client.delete("/v1/apps/dev/web", params={"wait": "maybe"})
    assert bad.status_code == 422 and "wait" in bad.text  # before anything is looked up


async def test_releases_carry_the_whole_record(client: httpx.AsyncClient) -> None:
    await deploy(client, message="first")
    releases = (await client.get("/v1/apps/dev/web/releases")).json()
    assert len(releases) == 1
    release = releases[0]
    for field in (
        "number",
        "digest",
        "spec_hash",
        "image",
        "created_at",
        "created_by",
        "message",
        "origin",
        "rollback_of",
        "result",
        "result_reason",
        "spec",
    ):
        assert field in release, field
    assert release["digest"].startswith("sha256:")
    assert release["spec"]["app"] == "web"
    assert release["result"] == "in_progress"


async def test_temporary_failure_is_503(client: httpx.AsyncClient, service: FakeService) -> None:
    service.fail_with = DriverUnavailable("the Docker engine does not answer")
    response = await client.get("/v1/apps")
    assert response.status_code == 503
    assert response.json()["error"] == {
        "type": "driver_unavailable",
        "message": "the Docker engine does not answer",
        "problems": [],
    }


async def test_permanent_failure_is_500_with_its_message(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    service.fail_with = PermanentFailure("nginx -t rejected the config")
    response = await client.get("/v1/apps")
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "nginx -t rejected the config"


async def test_unexpected_exception_is_500_without_a_traceback(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    service.fail_with = RuntimeError("secret internals at /srv/kiln/engine.py line 42")
    response = await client.get("/v1/apps")
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "type": "internal",
            "message": "internal error, see the server log",
            "problems": [],
        }
    }
    assert "Traceback" not in response.text
    assert "secret internals" not in response.text


async def test_schema_is_the_kiln_yaml_json_schema(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/v1/schema")).json()
    assert schema["title"] == "kiln.yaml"
    assert "image" in schema["properties"]


async def test_shutdown_is_accepted_then_requested(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    response = await client.post("/v1/shutdown")
    assert response.status_code == 202
    assert service.shutdown_requested.is_set()
