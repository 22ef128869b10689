"""Secret endpoints over a FakeService: the value goes in as raw bytes and never comes out."""

from __future__ import annotations

import httpx

from kiln.model import AppKey

from .fake_service import FakeService

WEB = AppKey("dev", "web")
VALUE = b"s3cr3t-\x00-binary-\xff-value"


async def test_set_list_remove_and_the_value_never_comes_back(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    path = "/v1/apps/dev/web/secrets/DB_PASSWORD"
    answers = []
    first = await client.put(path, content=VALUE)
    answers.append(first)
    assert first.status_code == 200, first.text
    assert first.json() | {"deploy": None} == {
        "name": "DB_PASSWORD",
        "version": 1,
        "changed": True,
        "deploy": None,
        "message": "",
    }
    again = await client.put(path, content=VALUE)
    answers.append(again)
    assert again.json()["changed"] is False
    assert service.secret_values[WEB, "DB_PASSWORD"] == [VALUE]
    listing = await client.get("/v1/apps/dev/web/secrets")
    answers.append(listing)
    assert [s["name"] for s in listing.json()] == ["DB_PASSWORD"]
    answers.append(await client.get("/v1/events"))
    answers.append(await client.post("/v1/secrets/rotate-key"))
    assert answers[-1].json()["reencrypted"] == 1
    removed = await client.delete(path)
    assert removed.status_code == 204
    assert (await client.delete(path)).status_code == 404
    for answer in answers:
        assert b"s3cr3t" not in answer.content


async def test_bad_names_and_sizes_are_refused_without_echoing_the_value(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    bad = await client.put("/v1/apps/dev/web/secrets/1-bad", content=b"s3cr3t")
    assert bad.status_code == 422 and b"s3cr3t" not in bad.content
    big = await client.put("/v1/apps/dev/web/secrets/BIG", content=b"s3cr3t" * 20000)
    assert big.status_code in (413, 422) and b"s3cr3t" not in big.content
    unknown = await client.put("/v1/apps/dev/web/secrets/A?value=s3cr3t", content=b"x")
    assert unknown.status_code == 422
    assert service.secret_values == {}
