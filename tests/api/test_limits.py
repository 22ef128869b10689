"""Hostile or broken requests get a clear 4xx in the JSON error shape, never a 500."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from kiln.api.limits import MAX_BODY_BYTES, MAX_SPEC_BYTES
from kiln.api.schemas import MAX_ID

from .conftest import AUTH, WEB_SPEC, asgi_client
from .fake_service import FakeService

JSON = {**AUTH, "content-type": "application/json"}


def assert_error(response: httpx.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    for word in words:
        assert word in error["message"] or any(word in p for p in error["problems"]), error
    return error


@pytest.fixture
async def deployed(client: httpx.AsyncClient) -> httpx.AsyncClient:
    assert (await client.post("/v1/deploy", json={"spec": WEB_SPEC})).status_code == 201
    return client


async def test_a_body_over_the_limit_is_413_before_it_is_read(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    body = b'{"spec": "' + b"x" * MAX_BODY_BYTES + b'"}'
    error = assert_error(
        await client.post("/v1/deploy", content=body, headers=JSON), 413, "too large"
    )
    assert f"{MAX_SPEC_BYTES // 1024} KiB" in error["message"]
    assert service.apps == {}


async def test_a_body_without_a_length_is_cut_at_the_limit(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"spec": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"y" * 65536

    response = await client.post("/v1/deploy", content=chunks(), headers=JSON)
    assert_error(response, 413, "too large")


async def test_the_size_limit_is_checked_before_the_token(app: FastAPI) -> None:
    async with asgi_client(app) as anonymous:
        response = await anonymous.post("/v1/identify", content=b"x" * (MAX_BODY_BYTES + 1))
    assert_error(response, 413)


async def test_a_spec_at_its_size_limit_is_not_refused_for_its_json_escaping(
    client: httpx.AsyncClient,
) -> None:
    # Every newline and quote doubles in JSON; the body limit leaves room for that.
    comment = '# "quoted"\n' * ((MAX_SPEC_BYTES - len(WEB_SPEC)) // 11)
    spec = WEB_SPEC + comment
    assert len(spec.encode()) <= MAX_SPEC_BYTES
    response = await client.post("/v1/deploy", json={"spec": spec})
    assert response.status_code == 201, response.text[:500]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/apps/dev/web/rollback", {"to": MAX_ID + 1}),
        ("/v1/apps/dev/web/rollback", {"to": 2**63}),
        ("/v1/apps/dev/web/rollback", {"to": -(2**70)}),
        ("/v1/apps/dev/web/scale", {"instances": 2**64}),
    ],
)
async def test_integers_beyond_int64_are_422_naming_the_field(
    deployed: httpx.AsyncClient, path: str, body: dict
) -> None:
    field = next(iter(body))
    assert_error(await deployed.post(path, json=body), 422, f"body.{field}")


@pytest.mark.parametrize(
    "params",
    [
        {"after": str(MAX_ID + 1)},
        {"after": str(2**63)},
        {"after": "9" * 5000},
        {"after": "-1"},
        {"limit": "1e3"},
    ],
)
async def test_event_query_numbers_out_of_range_are_422(
    client: httpx.AsyncClient, params: dict
) -> None:
    assert_error(await client.get("/v1/events", params=params), 422, "query.")


@pytest.mark.parametrize("last_id", [str(MAX_ID + 1), str(2**63), "²", "12a", "-3", "1" * 20])
async def test_a_bad_last_event_id_is_a_clear_4xx(client: httpx.AsyncClient, last_id: str) -> None:
    headers = {"Last-Event-ID": last_id.encode("latin-1")}
    response = await client.get("/v1/events/stream", headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json"


async def test_a_5000_digit_number_is_400(deployed: httpx.AsyncClient) -> None:
    body = b'{"to": ' + b"7" * 5000 + b"}"
    response = await deployed.post("/v1/apps/dev/web/rollback", content=body, headers=JSON)
    error = assert_error(response, 400, "digits")
    assert "7777777777" not in json.dumps(error)  # the input is not echoed back


@pytest.mark.parametrize(
    "body",
    [b"[" * 20_000 + b"]" * 20_000, b'{"spec": ' + b'{"a": ' * 20_000 + b"1" + b"}" * 20_001],
)
async def test_20000_deep_json_is_400_before_parsing(
    client: httpx.AsyncClient, body: bytes
) -> None:
    assert_error(await client.post("/v1/deploy", content=body, headers=JSON), 400, "nested")


async def test_brackets_inside_a_string_do_not_count_as_nesting(client: httpx.AsyncClient) -> None:
    spec = WEB_SPEC + "# " + "[{" * 1000 + "\n"
    response = await client.post("/v1/deploy", json={"spec": spec})
    assert response.status_code == 201, response.text[:300]


async def test_a_spec_nested_20000_deep_is_a_4xx_not_a_500(client: httpx.AsyncClient) -> None:
    spec = "app: web\nimage: example/web:1\nenv: " + "[" * 20_000 + "]" * 20_000 + "\n"
    response = await client.post("/v1/deploy", json={"spec": spec})
    assert 400 <= response.status_code < 500, response.text[:300]


async def test_a_body_that_is_not_json_or_not_utf8_is_400(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/v1/deploy", content=b"{nope", headers=JSON), 422, "JSON")
    bad_utf8 = b'{"spec": "\xff\xfe"}'
    assert_error(await client.post("/v1/deploy", content=bad_utf8, headers=JSON), 400, "UTF-8")


async def test_errors_never_echo_a_huge_input(client: httpx.AsyncClient) -> None:
    huge_key = "k" * 100_000
    response = await client.post("/v1/deploy", json={"spec": WEB_SPEC, huge_key: 1})
    assert_error(response, 422, "body.kkkk")
    assert len(response.content) < 5_000


async def test_405_names_every_allowed_method_including_delete(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/apps/dev/web")
    assert_error(response, 405, "POST is not allowed")
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "DELETE"}
    response = await client.put("/v1/deploy")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
