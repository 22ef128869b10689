"""Who is on the other end: the server proves it holds the token before the client sends it;
the server records who it verified, and the client's claim only as a note."""

from __future__ import annotations

import gc
import json
import os
import pwd
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from kiln.client import Endpoint, KilnClient, NotThisKiln, ServerUnreachable
from kiln.config import Settings, identity_proof

from .conftest import INSTALLATION_ID, TOKEN, WEB_SPEC, asgi_client
from .fake_service import FakeService
from .squatter import Squatter, squatting


@pytest.fixture(params=[False, True], ids=["plain", "mimic"])
def squatter(request: pytest.FixtureRequest) -> Iterator[Squatter]:
    with squatting(mimic=request.param, token=TOKEN) as squat:
        yield squat


async def test_identify_needs_no_token_and_proves_the_token_for_the_nonce(app: FastAPI) -> None:
    nonce = "ab" * 16
    async with asgi_client(app) as anonymous:
        response = await anonymous.post("/v1/identify", json={"nonce": nonce})
    assert response.status_code == 200
    answer = response.json()
    assert answer["installation_id"] == INSTALLATION_ID
    assert answer["proof"] == identity_proof(TOKEN, nonce)
    assert answer["proof"] != identity_proof(TOKEN, "cd" * 16)  # bound to the nonce
    assert TOKEN not in response.text


async def test_identify_refuses_a_short_or_strange_nonce(app: FastAPI) -> None:
    async with asgi_client(app) as anonymous:
        for nonce in ("", "ab", "zz" * 16, "ab" * 100):
            response = await anonymous.post("/v1/identify", json={"nonce": nonce})
            assert response.status_code == 422, nonce


def test_the_client_identifies_a_tcp_kiln_before_it_sends_the_token(
    live_url: str, service: FakeService
) -> None:
    with KilnClient(base_url=live_url, token=TOKEN, actor="ann@laptop") as client:
        identity = client.server_identity()
        assert identity.proven and identity.installation_id == INSTALLATION_ID
        assert client.deploy(WEB_SPEC).release.number == 1


def test_a_squatter_on_the_port_never_gets_the_token(squatter: Squatter) -> None:
    url = f"http://127.0.0.1:{squatter.port}"
    with KilnClient(base_url=url, token=TOKEN, actor="ann@laptop") as client:
        for call in (client.list_apps, lambda: client.deploy(WEB_SPEC), client.shutdown):
            with pytest.raises(NotThisKiln) as caught:
                call()
            assert (
                f"something else is listening on 127.0.0.1:{squatter.port}; it is not this kiln"
                in caught.value.message
            )
        with pytest.raises(NotThisKiln):
            list(client.follow_events())
    assert squatter.headers_seen, "the client did ask who it was"
    assert not squatter.any_token_seen()


def test_a_socket_that_is_not_the_users_own_gets_no_token(
    unix_kiln: Path, service: FakeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the socket file belonged to another user (KILN_API_SOCKET pointing at theirs).
    monkeypatch.setattr(os, "geteuid", lambda: unix_kiln.stat().st_uid + 1)
    with (
        KilnClient(socket_path=unix_kiln, token=TOKEN, actor="ann") as client,
        pytest.raises(NotThisKiln, match="belongs to uid"),
    ):
        client.deploy(WEB_SPEC)
    assert service.calls == []


def test_no_socket_means_not_running(tmp_path: Path) -> None:
    path = tmp_path / "run" / "api.sock"
    with (
        KilnClient(socket_path=path, token=TOKEN, actor="ann") as client,
        pytest.raises(ServerUnreachable, match=f"the unix socket {path}"),
    ):
        client.list_apps()


def test_on_the_socket_the_server_records_the_os_user_and_the_claim_as_a_note(
    unix_kiln: Path, service: FakeService
) -> None:
    with KilnClient(socket_path=unix_kiln, token=TOKEN, actor="alice@laptop") as client:
        release = client.deploy(WEB_SPEC).release
    uid = os.geteuid()
    user = pwd.getpwuid(uid).pw_name
    assert release.created_by == f"local-token uid={uid}({user}), alice@laptop (claimed)"


async def test_a_claim_cannot_smuggle_control_characters_into_the_record(
    app: FastAPI, service: FakeService
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Kiln-Actor": "eve\x1b[2J\x07"}
    async with asgi_client(app, headers) as client:
        await client.post("/v1/deploy", json={"spec": WEB_SPEC})
    assert service.calls == [("deploy", "local-token, eve[2J (claimed)")]


def test_the_client_goes_to_the_socket_unless_tcp_is_asked_for(tmp_path: Path) -> None:
    home = tmp_path / "home"
    default = Endpoint.of(Settings.from_env({"KILN_HOME": str(home)}))
    assert default.socket_path == home / "run" / "api.sock"
    tcp = Endpoint.of(Settings.from_env({"KILN_HOME": str(home), "KILN_API_TCP": "1"}))
    assert (tcp.socket_path, tcp.url) == (None, "http://127.0.0.1:7070")
    url = Endpoint.of(
        Settings.from_env({"KILN_HOME": str(home), "KILN_API_URL": "http://127.0.0.2:9000/"})
    )
    assert (url.socket_path, url.url, url.where) == (
        None,
        "http://127.0.0.2:9000",
        "127.0.0.2:9000",
    )


def test_the_client_ignores_proxies_from_the_environment(
    live_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy would see the token; kiln's API is local and never goes through one.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    with KilnClient(base_url=live_url, token=TOKEN, actor="x") as client:
        assert client.list_apps() == []


def test_healthz_is_asked_without_the_token(squatter: Squatter) -> None:
    url = f"http://127.0.0.1:{squatter.port}"
    with KilnClient(base_url=url, token=TOKEN, actor="x") as client:
        assert not client.is_running()
    assert squatter.headers_seen and not squatter.any_token_seen()


def test_httpx_mock_of_identify_shows_the_protocol() -> None:
    """The whole exchange, as bytes on the wire would show it."""
    seen: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/identify":
            nonce = json.loads(request.content)["nonce"]
            answer = {"installation_id": None, "version": "x", "proof": identity_proof("t", nonce)}
            return httpx.Response(200, json=answer)
        return httpx.Response(200, json=[])

    transport = httpx.MockTransport(server)
    with KilnClient(base_url="http://kiln.test", token="t", actor="x", transport=transport) as c:
        assert c.list_apps() == []
        assert c.list_apps() == []
    assert [r.url.path for r in seen] == ["/v1/identify", "/v1/apps", "/v1/apps"]
    assert "authorization" not in seen[0].headers
    assert seen[1].headers["authorization"] == "Bearer t"
    nonce = json.loads(seen[0].content)["nonce"]
    assert len(nonce) == 32 and int(nonce, 16) >= 0


def test_failed_connects_to_the_socket_leave_no_socket_open(tmp_path: Path) -> None:
    # A warning about an unclosed socket (an error in this suite) would fail this test.
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as gone:
        gone.bind(str(stale))  # a socket file whose server is gone, as kill -9 leaves it
    for path in (tmp_path / "missing.sock", stale):
        with KilnClient(socket_path=path, token=TOKEN, actor="x") as client:
            for _ in range(3):
                assert not client.is_running()
                with pytest.raises(ServerUnreachable):
                    client.identify()
        gc.collect()
