"""Tokens with roles and environments, revoking, the audit log, and homes from before roles."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from kiln.api import create_app
from kiln.api.access import access_store
from kiln.client import KilnClient
from kiln.config import identity_proof, token_hash, token_id
from kiln.config.file import AuditSettings
from kiln.errors import Forbidden, Unauthorized
from kiln.model import AppKey
from kiln.store.access import SqliteAccessStore
from kiln.store.migrations import MIGRATIONS, migrate

from .conftest import AUTH, INSTALLATION_ID, TOKEN, WEB_SPEC, asgi_client
from .fake_service import FakeService
from .live_server import running_server

PRODUCTION_SPEC = WEB_SPEC.replace("environment: dev", "environment: production")
STAGING_SPEC = WEB_SPEC.replace("environment: dev", "environment: staging")


async def new_token(
    admin: httpx.AsyncClient, name: str, role: str, envs: list[str] | None = None
) -> str:
    answer = await admin.post(
        "/v1/tokens", json={"name": name, "role": role, "environments": envs or []}
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_staging_deployer_deploys_to_staging_but_not_to_production(
    app: FastAPI, client: httpx.AsyncClient, service: FakeService
) -> None:
    token = await new_token(client, "ci-staging", "deployer", ["staging"])
    async with asgi_client(app, bearer(token)) as ci:
        assert (await ci.post("/v1/deploy", json={"spec": STAGING_SPEC})).status_code == 201
        refused = await ci.post("/v1/deploy", json={"spec": PRODUCTION_SPEC})
        assert refused.status_code == 403
        error = refused.json()["error"]
        assert error["type"] == "forbidden"
        assert (
            "'ci-staging' (deployer for staging) may not deploy in production" in (error["message"])
        )
        assert (await client.post("/v1/deploy", json={"spec": PRODUCTION_SPEC})).status_code == 201
        # Steering, scaling and reading production are refused too; staging is fine.
        for method, path in [
            ("POST", "/v1/apps/production/web/rollout/promote"),
            ("POST", "/v1/apps/production/web/scale"),
            ("POST", "/v1/apps/production/web/rollback"),
            ("DELETE", "/v1/apps/production/web"),
            ("GET", "/v1/apps/production/web"),
            ("GET", "/v1/events?env=production&app=web"),
            ("GET", "/v1/apps/production/web/logs"),
        ]:
            answer = await ci.request(
                method, path, json={"instances": 1} if "scale" in path else None
            )
            assert answer.status_code == 403, (method, path)
        assert (await ci.get("/v1/apps/staging/web")).status_code == 200
        # A listing shows only the environments the token may read.
        listed = (await ci.get("/v1/apps")).json()
        assert [a["environment"] for a in listed] == ["staging"]
        events = (await ci.get("/v1/events")).json()
        assert events and all(e["environment"] in ("staging", None) for e in events)
    assert [who for what, who in service.calls if what == "deploy"] == [
        "ci-staging",
        "local-token",
    ]


async def test_a_viewer_reads_everything_and_changes_nothing(
    app: FastAPI, client: httpx.AsyncClient, service: FakeService
) -> None:
    assert (await client.post("/v1/deploy", json={"spec": WEB_SPEC})).status_code == 201
    token = await new_token(client, "dashboard", "viewer")
    async with asgi_client(app, bearer(token)) as viewer:
        assert (await viewer.get("/v1/apps/dev/web")).status_code == 200
        assert (await viewer.get("/v1/apps/dev/web/releases")).status_code == 200
        for method, path, body in [
            ("POST", "/v1/deploy", {"spec": WEB_SPEC}),
            ("POST", "/v1/apps/dev/web/scale", {"instances": 5}),
            ("POST", "/v1/apps/dev/web/stop", None),
            ("POST", "/v1/shutdown", None),
            ("POST", "/v1/tokens", {"name": "mine", "role": "admin"}),
            ("GET", "/v1/tokens", None),
            ("GET", "/v1/audit", None),
        ]:
            answer = await viewer.request(method, path, json=body)
            assert answer.status_code == 403, (method, path, answer.text)
    assert [what for what, _ in service.calls] == ["deploy"]
    assert not service.shutdown_requested.is_set()


async def test_an_admin_token_is_never_limited_to_environments(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/v1/tokens", json={"name": "half", "role": "admin", "environments": ["staging"]}
    )
    assert answer.status_code == 422
    assert "an admin token is for every environment" in answer.json()["error"]["message"]


async def test_tokens_are_shown_once_and_listed_without_the_token(
    client: httpx.AsyncClient,
) -> None:
    token = await new_token(client, "ci", "deployer", ["staging", "dev"])
    listed = (await client.get("/v1/tokens")).json()
    assert [(t["name"], t["role"], t["environments"]) for t in listed] == [
        ("ci", "deployer", ["dev", "staging"]),
        ("local-token", "admin", []),
    ]
    assert token not in str(listed)
    again = await client.post("/v1/tokens", json={"name": "ci", "role": "viewer"})
    assert again.status_code == 409
    assert "kiln token revoke ci" in again.json()["error"]["message"]


async def test_a_revoked_token_stops_working_at_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    token = await new_token(client, "laptop", "deployer")
    async with asgi_client(app, bearer(token)) as laptop:
        assert (await laptop.get("/v1/apps")).status_code == 200
        revoked = await client.delete("/v1/tokens/laptop")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        answer = await laptop.get("/v1/apps")
        assert answer.status_code == 401
        assert "the token 'laptop' was revoked" in answer.json()["error"]["message"]
    assert (await client.delete("/v1/tokens/laptop")).status_code == 404
    # The name is free again; the old token stays dead.
    await new_token(client, "laptop", "viewer")
    async with asgi_client(app, bearer(token)) as old:
        assert (await old.get("/v1/apps")).status_code == 401
    listed = (await client.get("/v1/tokens?revoked=true")).json()
    assert [(t["name"], t["revoked_at"] is not None) for t in listed] == [
        ("laptop", False),
        ("local-token", False),
        ("laptop", True),
    ]


async def test_the_last_admin_and_the_callers_own_token_are_not_revoked(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    own = await client.delete("/v1/tokens/local-token")
    assert own.status_code == 409
    assert "the token this request uses" in own.json()["error"]["message"]
    second = await new_token(client, "second-admin", "admin")
    async with asgi_client(app, bearer(second)) as other:
        assert (await other.delete("/v1/tokens/local-token")).status_code == 200
        last = await other.delete("/v1/tokens/second-admin")
        assert last.status_code == 409


async def test_identify_proves_the_token_the_client_names_and_not_a_revoked_one(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    token = await new_token(client, "remote", "viewer")
    nonce = "ab" * 16
    async with asgi_client(app) as anonymous:
        answer = await anonymous.post(
            "/v1/identify", json={"nonce": nonce, "token_id": token_id(token)}
        )
        assert answer.json()["proof"] == identity_proof(token, nonce)
        assert token not in answer.text and token_hash(token) not in answer.text
        await client.delete("/v1/tokens/remote")
        answer = await anonymous.post(
            "/v1/identify", json={"nonce": nonce, "token_id": token_id(token)}
        )
        assert answer.status_code == 200 and answer.json()["proof"] is None


def test_a_client_with_a_role_token_talks_to_a_tcp_kiln(app: FastAPI) -> None:
    with running_server(app) as url:
        with KilnClient(base_url=url, token=TOKEN, actor="ann") as admin:
            made = admin._json(
                "POST", "/v1/tokens", json={"name": "ro", "role": "viewer", "environments": []}
            )
        with KilnClient(base_url=url, token=made["token"], actor="bob") as viewer:
            assert viewer.server_identity().proven
            assert viewer.list_apps() == []
            with pytest.raises(Forbidden, match="'ro' \\(viewer for every environment\\)"):
                viewer.deploy(WEB_SPEC)
            with pytest.raises(Forbidden):
                viewer.scale(AppKey("dev", "web"), 2)
        with KilnClient(base_url=url, token=TOKEN, actor="ann") as admin:
            admin._json("DELETE", "/v1/tokens/ro")
        with (
            KilnClient(base_url=url, token=made["token"], actor="bob") as viewer,
            pytest.raises(Unauthorized, match="knows no active token like yours"),
        ):
            viewer.list_apps()


# --- audit -----------------------------------------------------------------------------------


async def test_changes_and_refusals_are_audited_and_reads_are_not(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    token = await new_token(client, "ci-staging", "deployer", ["staging"])
    async with asgi_client(app, {**bearer(token), "X-Kiln-Actor": "ci@runner"}) as ci:
        assert (await ci.post("/v1/deploy", json={"spec": STAGING_SPEC})).status_code == 201
        assert (await ci.post("/v1/deploy", json={"spec": PRODUCTION_SPEC})).status_code == 403
        assert (await ci.get("/v1/apps/staging/web")).status_code == 200
        assert (await ci.get("/v1/apps/production/web")).status_code == 403
    async with asgi_client(app, {"Authorization": "Bearer stolen"}) as stranger:
        assert (await stranger.post("/v1/apps/staging/web/stop")).status_code == 401
    entries = (await client.get("/v1/audit")).json()
    # The token creation itself is the first entry.
    assert [(e["method"], e["path"], e["status"], e["outcome"]) for e in entries] == [
        ("POST", "/v1/tokens", 201, "ok"),
        ("POST", "/v1/deploy", 201, "ok"),
        ("POST", "/v1/deploy", 403, "refused"),
        ("GET", "/v1/apps/production/web", 403, "refused"),
        ("POST", "/v1/apps/staging/web/stop", 401, "refused"),
    ]
    made, refused = entries[1], entries[2]
    assert (made["token"], made["claimed"], made["environment"], made["app"], made["release"]) == (
        "ci-staging",
        "ci@runner",
        "staging",
        "web",
        1,
    )
    assert refused["token"] == "ci-staging" and "may not deploy in production" in refused["detail"]
    assert entries[0]["token"] == "local-token"
    assert entries[4]["token"] is None and entries[4]["detail"].startswith("unauthorized")
    only_web = (await client.get("/v1/audit?env=staging&app=web")).json()
    assert [e["path"] for e in only_web] == ["/v1/deploy", "/v1/apps/staging/web/stop"]
    later = (await client.get("/v1/audit?since=2999-01-01T00:00:00")).json()
    assert later == []


async def test_a_stranger_hammering_the_api_cannot_grow_the_audit_log_past_its_retention(
    tmp_path: Path,
) -> None:
    store = SqliteAccessStore(tmp_path / "kiln.db", audit=AuditSettings(refused_max_entries=100))
    app = create_app(FakeService(), token=TOKEN, access=store)
    async with asgi_client(app, AUTH) as admin:
        await new_token(admin, "ci", "deployer", ["staging"])
        async with asgi_client(app, {"Authorization": "Bearer guessed"}) as stranger:
            for n in range(150):
                assert (await stranger.post(f"/v1/apps/staging/web{n}/stop")).status_code == 401
        entries = (await admin.get("/v1/audit?limit=1000")).json()
    await access_store(app).close()
    assert len(entries) == 101
    assert (entries[0]["path"], entries[0]["outcome"]) == ("/v1/tokens", "ok")
    assert [e["path"] for e in entries[1:]] == [
        f"/v1/apps/staging/web{n}/stop" for n in range(50, 150)
    ]


def test_the_audit_log_records_the_peer_on_the_unix_socket(
    unix_kiln: Path, service: FakeService
) -> None:
    import os
    import pwd

    with KilnClient(socket_path=unix_kiln, token=TOKEN, actor="alice@laptop") as client:
        client.deploy(WEB_SPEC)
        entries = client._json("GET", "/v1/audit")
    uid = os.getuid()
    assert entries[-1]["peer"] == f"uid={uid}({pwd.getpwuid(uid).pw_name})"
    assert entries[-1]["release"] == 1


def test_the_audit_log_and_tokens_cannot_be_rewritten(tmp_path: Path) -> None:
    db = tmp_path / "kiln.db"
    store = SqliteAccessStore(db)
    app = create_app(FakeService(), token=TOKEN, access=store)
    with running_server(app) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        assert client.post("/v1/shutdown").status_code == 202
    store.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 1
        for statement in (
            "UPDATE audit SET status = 200",
            "DELETE FROM audit",
            "DELETE FROM tokens",
            "UPDATE tokens SET role = 'viewer'",
            "UPDATE tokens SET token_hash = 'x'",
        ):
            with pytest.raises(sqlite3.DatabaseError, match=r"append-only|never"):
                conn.execute(statement)
        conn.execute("UPDATE tokens SET revoked_at = 'now', revoked_by = 'me'")
        with pytest.raises(sqlite3.DatabaseError, match="only revoked once"):
            conn.execute("UPDATE tokens SET revoked_at = NULL")
    finally:
        conn.close()
    assert token_hash(TOKEN) in db.read_bytes().decode("latin-1")
    assert TOKEN not in db.read_bytes().decode("latin-1")


async def test_a_home_from_before_roles_keeps_its_token_as_the_first_admin(
    tmp_path: Path,
) -> None:
    db = tmp_path / "kiln.db"
    conn = sqlite3.connect(db, isolation_level=None)
    first_with_tokens = next(
        i for i, m in enumerate(MIGRATIONS) if any("CREATE TABLE tokens" in s for s in m)
    )
    migrate(conn, db, MIGRATIONS[:first_with_tokens])  # the schema before tokens existed
    conn.close()
    app = create_app(
        FakeService(), token=TOKEN, installation_id=INSTALLATION_ID, access=SqliteAccessStore(db)
    )
    try:
        async with asgi_client(app, AUTH) as client:
            assert (await client.get("/v1/apps")).status_code == 200
            tokens = (await client.get("/v1/tokens")).json()
    finally:
        await access_store(app).close()
    assert [(t["name"], t["role"]) for t in tokens] == [("local-token", "admin")]
    # The next start (its own connection, as a restarted kiln) finds it stored: not added twice.
    store = SqliteAccessStore(db)
    try:
        create_app(FakeService(), token=TOKEN, access=store)
        assert len(store.list_tokens(revoked=True)) == 1
    finally:
        store.close()


async def test_a_staging_deployer_cannot_approve_or_promote_into_production(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    token = await new_token(client, "ci-staging", "deployer", ["staging"])
    async with asgi_client(app, bearer(token)) as ci:
        approve = await ci.post(
            "/v1/approvals", json={"app": "web", "environment": "production", "release": 1}
        )
        assert approve.status_code == 403
        assert "may not approve in production" in approve.json()["error"]["message"]
        promote = await ci.post(
            "/v1/promotions", json={"app": "web", "source": "staging", "target": "production"}
        )
        assert promote.status_code == 403
        assert "may not deploy in production" in promote.json()["error"]["message"]
        diff = await ci.get("/v1/diff?app=web&left=staging&right=production")
        assert diff.status_code == 403
