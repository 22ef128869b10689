"""Events (pages and Server-Sent Events) and NDJSON logs, over a real local server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx

from kiln.model import AppKey

from .conftest import AUTH
from .fake_service import FakeService

WEB = AppKey("dev", "web")
API = AppKey("dev", "api")


def sse_events(response: httpx.Response) -> Iterator[dict]:
    """The ``(id, data)`` of each event on the wire, decoded by hand to check the format."""
    current: dict = {}
    for line in response.iter_lines():
        if line.startswith("id: "):
            current["id"] = line[4:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and current:
            yield current
            current = {}


async def test_events_page_is_the_last_limit_then_after(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    for n in range(5):
        service.record(WEB, "note", f"event {n}")
    last_two = (await client.get("/v1/events", params={"limit": 2})).json()
    assert [e["id"] for e in last_two] == [4, 5]
    after_three = (await client.get("/v1/events", params={"after": 3})).json()
    assert [e["id"] for e in after_three] == [4, 5]
    assert after_three[0]["environment"] == "dev"
    assert after_three[0]["app"] == "web"


async def test_events_filter_needs_both_env_and_app(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/events", params={"env": "dev"})
    assert response.status_code == 422
    assert "both env and app" in response.json()["error"]["message"]


def test_event_stream_sends_events_after_the_given_id_then_new_ones(
    live_url: str, service: FakeService
) -> None:
    for n in range(3):
        service.record(WEB, "note", f"old {n}")
    service.record(API, "note", "another app")
    params = {"env": "dev", "app": "web", "after": 1}
    with httpx.stream(
        "GET", f"{live_url}/v1/events/stream", params=params, headers=AUTH, timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = sse_events(response)
        first, second = next(stream), next(stream)
        service.record(WEB, "note", "new")
        third = next(stream)
    assert [first["id"], second["id"], third["id"]] == ["2", "3", "5"]
    assert third["data"]["reason"] == "new"
    assert third["data"]["id"] == 5


def test_event_stream_resumes_from_last_event_id(live_url: str, service: FakeService) -> None:
    for n in range(3):
        service.record(None, "note", f"server-wide {n}")
    headers = {**AUTH, "Last-Event-ID": "2"}
    with httpx.stream("GET", f"{live_url}/v1/events/stream", headers=headers, timeout=10) as r:
        event = next(sse_events(r))
    assert event["id"] == "3"
    assert event["data"]["app"] is None


def test_event_stream_needs_the_token(live_url: str) -> None:
    response = httpx.get(f"{live_url}/v1/events/stream", timeout=10)
    assert response.status_code == 401


async def test_logs_are_ndjson_lines(client: httpx.AsyncClient, service: FakeService) -> None:
    await client.post("/v1/deploy", json={"spec": "app: web\nimage: example/web:1\n"})
    for n in range(5):
        service.add_log(WEB, "r1-0", f"line {n}")
    response = await client.get("/v1/apps/dev/web/logs", params={"tail": 2})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["text"] for line in lines] == ["line 3", "line 4"]
    assert lines[0]["instance"] == "r1-0"


async def test_logs_of_an_unknown_instance_end_with_an_error_line(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/v1/deploy", json={"spec": "app: web\nimage: example/web:1\n"})
    response = await client.get("/v1/apps/dev/web/logs", params={"instance": "r9-9"})
    last = json.loads(response.text.splitlines()[-1])
    assert last["error"]["type"] == "not_found"


def test_followed_logs_stream_new_lines(live_url: str, service: FakeService) -> None:
    httpx.post(
        f"{live_url}/v1/deploy", json={"spec": "app: web\nimage: example/web:1\n"}, headers=AUTH
    )
    service.add_log(WEB, "r1-0", "before")
    params = {"follow": "true", "tail": 10}
    with httpx.stream(
        "GET", f"{live_url}/v1/apps/dev/web/logs", params=params, headers=AUTH, timeout=10
    ) as response:
        lines = response.iter_lines()
        assert json.loads(next(lines))["text"] == "before"
        service.add_log(WEB, "r1-0", "after")
        assert json.loads(next(lines))["text"] == "after"
