"""Events (pages and Server-Sent Events) and NDJSON logs, over a real local server."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from kiln.model import AppKey

from .conftest import AUTH
from .fake_service import FakeService
from .live_server import running_server

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
        service.record(WEB, "rollout.progress", f"event {n}")
    last_two = (await client.get("/v1/events", params={"limit": 2})).json()
    assert [e["id"] for e in last_two] == [4, 5]
    after_three = (await client.get("/v1/events", params={"after": 3})).json()
    assert [e["id"] for e in after_three] == [4, 5]
    assert after_three[0]["environment"] == "dev"
    assert after_three[0]["app"] == "web"


async def test_events_filter_by_app_defaults_to_dev_and_env_alone_is_refused(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    service.record(WEB, "rollout.progress", "web in dev")
    service.record(AppKey("staging", "web"), "rollout.progress", "web in staging")
    only_dev = (await client.get("/v1/events", params={"app": "web"})).json()
    assert [e["reason"] for e in only_dev] == ["web in dev"]
    response = await client.get("/v1/events", params={"env": "dev"})
    assert response.status_code == 422
    assert "give app too" in response.json()["error"]["message"]


def test_event_stream_sends_events_after_the_given_id_then_new_ones(
    live_url: str, service: FakeService
) -> None:
    for n in range(3):
        service.record(WEB, "rollout.progress", f"old {n}")
    service.record(API, "rollout.progress", "another app")
    params = {"env": "dev", "app": "web", "after": 1}
    with httpx.stream(
        "GET", f"{live_url}/v1/events/stream", params=params, headers=AUTH, timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = sse_events(response)
        first, second = next(stream), next(stream)
        service.record(WEB, "rollout.progress", "new")
        third = next(stream)
    assert [first["id"], second["id"], third["id"]] == ["2", "3", "5"]
    assert third["data"]["reason"] == "new"
    assert third["data"]["id"] == 5


def test_event_stream_resumes_from_last_event_id(live_url: str, service: FakeService) -> None:
    for n in range(3):
        service.record(None, "rollout.progress", f"server-wide {n}")
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


class CountsRequests:
    """ASGI wrapper: how many requests the app is still handling (its log lines are written
    by the time one is counted out)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the lifespan lasts as long as the server
            await self.app(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def test_a_client_leaving_the_event_stream_is_not_an_error_in_the_log(
    app: FastAPI, service: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    counted = CountsRequests(app)
    stop = threading.Event()

    def feed() -> None:  # events keep coming while clients come and go
        for n in range(20_000):
            if stop.wait(0.002):
                return
            service.record(WEB, "rollout.progress", f"event {n} " + "x" * 500)

    feeder = threading.Thread(target=feed, daemon=True)
    caplog.set_level(logging.DEBUG, logger="kiln.api")
    with running_server(counted) as url:  # type: ignore[arg-type]
        feeder.start()
        try:
            for _ in range(5):
                with httpx.stream("GET", f"{url}/v1/events/stream", headers=AUTH, timeout=10) as r:
                    assert next(sse_events(r))["data"]["kind"] == "rollout.progress"
            wait_until(lambda: counted.active == 0, "every stream to end on the server")
        finally:
            stop.set()
            feeder.join()
    loud = [r for r in caplog.records if r.name == "kiln.api" and r.levelno >= logging.WARNING]
    assert loud == []


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


async def test_the_event_stream_documents_json_errors_and_the_app_filter(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    stream = document["paths"]["/v1/events/stream"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    for code in ("400", "401", "413", "422", "500"):
        assert list(stream["responses"][code]["content"]) == ["application/json"], code
    assert "event: error" in stream["description"]
    env = next(p for p in stream["parameters"] if p["name"] == "env")
    assert "default dev" in env["description"]
    logs = document["paths"]["/v1/apps/{env}/{app}/logs"]["get"]["responses"]
    assert list(logs["404"]["content"]) == ["application/json"]


async def test_events_filter_by_category_or_kind_and_refuse_unknown_types(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    service.record(WEB, "rollout.started", "start")
    service.record(WEB, "instance.exited", "crash")
    service.record(WEB, "rollout.failed", "failed")
    rollout = (await client.get("/v1/events", params={"type": "rollout"})).json()
    assert [e["reason"] for e in rollout] == ["start", "failed"]
    assert rollout[0]["category"] == "rollout"
    both = (await client.get("/v1/events", params={"type": "rollout.failed,instance"})).json()
    assert [e["reason"] for e in both] == ["crash", "failed"]
    response = await client.get("/v1/events", params={"type": "rollouts"})
    assert response.status_code == 422
    assert "rollout" in response.json()["error"]["message"]
    kinds = (await client.get("/v1/event-kinds")).json()
    assert "rollout.failed" in kinds["kinds"] and "drift" in kinds["categories"]


def test_event_stream_filters_by_type(live_url: str, service: FakeService) -> None:
    service.record(WEB, "instance.started", "noise")
    service.record(WEB, "rollout.failed", "wanted")
    params = {"type": "rollout.failed"}
    with httpx.stream(
        "GET", f"{live_url}/v1/events/stream", params=params, headers=AUTH, timeout=30
    ) as response:
        stream = sse_events(response)
        first = next(stream)
        service.record(WEB, "instance.started", "more noise")
        service.record(WEB, "rollout.failed", "wanted again")
        second = next(stream)
    assert [first["data"]["reason"], second["data"]["reason"]] == ["wanted", "wanted again"]


async def test_every_request_is_timed_by_its_route_template_refusals_too(
    client: httpx.AsyncClient, service: FakeService
) -> None:
    await client.get("/v1/events", params={"app": "web"})
    await client.get("/v1/events", headers={"Authorization": "Bearer wrong"})
    assert ("/v1/events", "GET", 200) in service.api_requests
    assert ("/v1/events", "GET", 401) in service.api_requests
