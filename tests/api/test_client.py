"""KilnClient against a real local server: typed answers, errors back as kiln.errors."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kiln.client import KilnClient, NotThisKiln, ServerUnreachable
from kiln.config import identity_proof
from kiln.errors import Conflict, InvalidInput, NotFound, SpecInvalid, Unauthorized
from kiln.model import AppKey

from .conftest import TOKEN, WEB_SPEC
from .fake_service import FakeService

WEB = AppKey("dev", "web")


@pytest.fixture
def kiln(live_url: str) -> Iterator[KilnClient]:
    with KilnClient(base_url=live_url, token=TOKEN, actor="ann@laptop", timeout=10) as client:
        yield client


def test_deploy_status_and_releases_come_back_typed(kiln: KilnClient, service: FakeService) -> None:
    result = kiln.deploy(WEB_SPEC, message="first")
    assert result.changed and result.release.number == 1
    assert result.rollout is not None and result.rollout.to_release == 1
    assert kiln.status(WEB).key == WEB
    assert [r.number for r in kiln.releases(WEB)] == [1]
    assert service.calls == [("deploy", "local-token, ann@laptop (claimed)")]


def test_invalid_spec_raises_spec_invalid_with_every_problem(kiln: KilnClient) -> None:
    with pytest.raises(SpecInvalid) as caught:
        kiln.deploy("app: web\ninstances: -1\n")
    assert len(caught.value.problems) == 2
    assert any(p.startswith("image:") for p in caught.value.problems)


def test_errors_come_back_as_their_kiln_error_class(kiln: KilnClient) -> None:
    with pytest.raises(NotFound):
        kiln.status(AppKey("dev", "ghost"))
    kiln.deploy(WEB_SPEC)
    with pytest.raises(Conflict):
        kiln.rollback(WEB)
    with pytest.raises(InvalidInput, match=r"body\.instances"):
        kiln.scale(WEB, -1)


def test_a_wrong_token_is_not_sent_over_tcp(live_url: str) -> None:
    # The server knows no token with that id: it says so, and the token stays here.
    with (
        KilnClient(base_url=live_url, token="wrong", actor="x") as client,
        pytest.raises(Unauthorized, match="knows no active token like yours") as caught,
    ):
        client.list_apps()
    assert not isinstance(caught.value, NotThisKiln)
    assert "the token was not sent" in caught.value.message


def test_a_wrong_token_on_the_socket_is_unauthorized(unix_kiln: Path) -> None:
    with (
        KilnClient(socket_path=unix_kiln, token="wrong", actor="x") as client,
        pytest.raises(Unauthorized, match="wrong API token"),
    ):
        client.list_apps()


def test_server_not_running_says_how_to_start_it() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but not listening: connection refused
        url = f"http://127.0.0.1:{port}"
        with (
            KilnClient(base_url=url, token=None, actor="x") as client,
            pytest.raises(ServerUnreachable) as caught,
        ):
            client.list_apps()
    assert f"kiln is not running at {url}" in caught.value.message
    assert "kiln up" in caught.value.message
    assert not KilnClient(base_url=url, token=None, actor="x").is_running()


def test_follow_events_streams_new_events(kiln: KilnClient, service: FakeService) -> None:
    service.record(WEB, "rollout.progress", "one")
    stream = kiln.follow_events(key=WEB, after=0)
    assert next(stream).reason == "one"
    service.record(WEB, "rollout.progress", "two")
    assert next(stream).reason == "two"
    stream.close()


def test_follow_events_reconnects_after_the_last_id_it_saw() -> None:
    asked_after: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/identify":
            nonce = json.loads(request.content)["nonce"]
            proof = identity_proof("t", nonce)
            return httpx.Response(
                200, json={"installation_id": None, "version": "x", "proof": proof}
            )
        after = request.url.params["after"]
        asked_after.append(after)
        next_id = int(after) + 1
        body = (
            f': ping\n\nid: {next_id}\ndata: {{"id": {next_id}, "at": "2026-01-01T00:00:00Z",'
            f' "kind": "rollout.progress", "reason": "n{next_id}"}}\n\n'
        )
        # Each answer ends after one event, as a dropped connection would.
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    transport = httpx.MockTransport(answer)
    client = KilnClient(base_url="http://kiln.test", token="t", actor="x", transport=transport)
    stream = client.follow_events(after=7)
    assert [next(stream).id for _ in range(3)] == [8, 9, 10]
    stream.close()
    assert asked_after == ["7", "8", "9"]


def test_logs_come_back_as_lines_and_unknown_instance_raises(
    kiln: KilnClient, service: FakeService
) -> None:
    kiln.deploy(WEB_SPEC)
    service.add_log(WEB, "r1-0", "hello")
    assert [line.text for line in kiln.logs(WEB)] == ["hello"]
    with pytest.raises(NotFound):
        list(kiln.logs(WEB, instance="r7-7"))
