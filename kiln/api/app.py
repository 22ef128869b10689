"""``create_app(service, token=..., installation_id=...)``: the kiln HTTP API as a FastAPI app.

    request ─▶ CatchAll ─▶ Audit ─▶ RequestGuard ─▶ route's rule (access.py) ─▶ route ─▶ Service
                  │ unexpected   │ changes and      │ size, depth   │ token → role → env
                  │   → 500      │ refusals logged  │ → 413 / 400   │ 401 / 403

Every route declares the permission it needs (``requires(Permission.…)``, kiln.api.access);
only ``GET /healthz`` (is kiln up?) and ``POST /v1/identify`` are ``public()``: there a client
that has not yet sent its token checks that this server knows it — the answer is an HMAC of
the client's nonce keyed with the token's stored hash (``kiln.config.identity_proof``). A
program squatting on kiln's TCP port cannot forge it, so the client never hands its token to
one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, status
from fastapi.openapi.utils import get_openapi

import kiln
from kiln.api.access import (
    ACCESS_STATE,
    check_every_route_declares_a_permission,
    public,
    requires,
)
from kiln.api.audit import AuditMiddleware
from kiln.api.deps import PRINCIPAL, only_known_query_parameters
from kiln.api.errors import ErrorOutDoc, install_error_handlers
from kiln.api.limits import RequestGuard
from kiln.api.routes_access import access_router
from kiln.api.routes_apps import apps_router
from kiln.api.routes_drift import drift_router
from kiln.api.routes_images import images_router
from kiln.api.routes_metrics import RequestTiming, metrics_router
from kiln.api.routes_promotion import promotion_router
from kiln.api.routes_rollouts import rollouts_router
from kiln.api.routes_secrets import secrets_router
from kiln.api.routes_streams import streams_router
from kiln.api.routes_volumes import volumes_router
from kiln.api.schemas import HealthOut, IdentifyRequest, IdentityOut
from kiln.api.ui import access_authenticator, create_ui_app
from kiln.config import identity_proof_from_hash, token_hash, token_id
from kiln.controller.service import Service
from kiln.model.access import Permission, Role, TokenRecord
from kiln.spec import spec_json_schema
from kiln.store.access import AccessStore, FakeAccessStore
from kiln.store.aio import AsyncAccessStore, guard_from_env

_ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorOut"}


def create_app(
    service: Service,
    *,
    token: str,
    installation_id: str | None = None,
    access: AccessStore | AsyncAccessStore | None = None,
) -> FastAPI:
    """The API over ``service``; ``installation_id`` is what ``/v1/identify`` names (the
    server passes ``kiln.config.read_or_create_installation_id(settings)``).

    ``token`` is the home's token (``KILN_HOME/token``): stored in ``access`` as the admin
    token ``local-token`` unless its hash is there already (a revoked one stays revoked).
    ``access`` keeps the tokens and the audit log (the server passes a ``SqliteAccessStore``;
    default: in memory)."""
    if not token:
        raise ValueError("the API token must not be empty")
    access = access if access is not None else FakeAccessStore()
    if not isinstance(access, AsyncAccessStore):
        # Every request's token lookup and audit append then runs on the store's own thread.
        access = AsyncAccessStore(access, guard=guard_from_env())
    home_hash = token_hash(token)
    # Once, while the app is built (before it serves): the facade is not in use yet.
    access.sync.import_token(
        TokenRecord(
            name=PRINCIPAL,
            role=Role.ADMIN,
            environments=frozenset(),
            token_id=token_id(token),
            token_hash=home_hash,
            created_at=datetime.now(UTC),
            created_by="kiln (the home's token file)",
        )
    )
    version = kiln.version()
    spec_schema = spec_json_schema()
    app = FastAPI(
        title="kiln",
        version=version,
        description="Run container apps as immutable infrastructure behind NGINX.",
        # The generated document is served below, behind the token like everything else;
        # the interactive pages would need it without a token, so they are off.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        responses=ErrorOutDoc,
        dependencies=[Depends(only_known_query_parameters)],
    )
    # The last middleware added runs first: the catch-all (added by install_error_handlers)
    # wraps the guard, so even a failure in the guard is a JSON 500.
    setattr(app.state, ACCESS_STATE, access)
    app.add_middleware(RequestGuard)
    app.add_middleware(AuditMiddleware, store=access)
    install_error_handlers(app)
    app.add_middleware(RequestTiming, service=service)  # outermost: sees the final status

    @app.get(
        "/healthz",
        summary="Liveness of the kiln server (no token needed)",
        tags=["server"],
        dependencies=[public()],
    )
    async def healthz() -> HealthOut:
        return HealthOut(ok=True, version=version)

    @app.post(
        "/v1/identify",
        summary="Prove this server knows the client's API token, without the client sending it",
        tags=["server"],
        dependencies=[public()],
    )
    async def identify(body: IdentifyRequest) -> IdentityOut:
        if body.token_id is None:  # a client that names no token means the home's
            record = await access.token_by_hash(home_hash)
        else:
            record = await access.token_by_id(body.token_id)
        proof = None
        if record is not None and record.active:
            proof = identity_proof_from_hash(record.token_hash, body.nonce)
        return IdentityOut(installation_id=installation_id, version=version, proof=proof)

    protected = APIRouter()
    protected.include_router(access_router())
    protected.include_router(apps_router(service))
    protected.include_router(rollouts_router(service))
    protected.include_router(promotion_router(service))
    protected.include_router(secrets_router(service))
    protected.include_router(volumes_router(service))
    protected.include_router(streams_router(service))
    protected.include_router(metrics_router(service))
    protected.include_router(drift_router(service))
    protected.include_router(images_router(service))

    @protected.get(
        "/v1/schema",
        summary="JSON Schema of kiln.yaml",
        tags=["server"],
        dependencies=[requires(Permission.READ)],
    )
    async def schema() -> dict[str, Any]:
        return spec_schema

    @protected.post(
        "/v1/shutdown",
        summary="Stop the kiln server (NGINX and the apps keep serving)",
        status_code=status.HTTP_202_ACCEPTED,
        tags=["server"],
        dependencies=[requires(Permission.ADMIN)],
    )
    async def shutdown(background: BackgroundTasks) -> dict[str, bool]:
        # After the answer is sent, so the caller hears "accepted" before the server goes.
        background.add_task(service.request_shutdown)
        return {"accepted": True}

    @protected.get(
        "/openapi.json", include_in_schema=False, dependencies=[requires(Permission.READ)]
    )
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    app.include_router(protected)
    # The dashboard signs in with an API token kept in a cookie (kiln.api.ui.session); its
    # routes declare their permissions as these do, checked against the cookie's token.
    app.mount("/ui", create_ui_app(service, authenticate=access_authenticator(access)))
    # A route without a rule would be open to anyone: refuse to build such an app.
    check_every_route_declares_a_permission(app)
    app.openapi = lambda: _openapi_document(app)  # type: ignore[method-assign]
    return app


def _openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with every error answer said to be JSON (FastAPI would label a
    stream route's errors with the stream's media type, but errors are never streamed before
    the status line: they are the JSON error shape)."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                for code, answer in operation.get("responses", {}).items():
                    if code.isdigit() and int(code) >= 400:
                        answer["content"] = {"application/json": {"schema": _ERROR_SCHEMA}}
        _link_deploy_to_its_app(document)
        app.openapi_schema = document
    return app.openapi_schema


# What a client can do next with the app a deploy answered about (OpenAPI links).
_APP_OPERATIONS = (
    ("status", "/v1/apps/{env}/{app}", "get"),
    ("releases", "/v1/apps/{env}/{app}/releases", "get"),
    ("logs", "/v1/apps/{env}/{app}/logs", "get"),
    ("scale", "/v1/apps/{env}/{app}/scale", "post"),
    ("rollback", "/v1/apps/{env}/{app}/rollback", "post"),
    ("stop", "/v1/apps/{env}/{app}/stop", "post"),
    ("destroy", "/v1/apps/{env}/{app}", "delete"),
)


def _link_deploy_to_its_app(document: dict[str, Any]) -> None:
    paths = document.get("paths", {})
    links = {
        name: {
            "operationId": paths[path][method]["operationId"],
            "parameters": {
                "env": "$response.body#/release/environment",
                "app": "$response.body#/release/app",
            },
        }
        for name, path, method in _APP_OPERATIONS
        if method in paths.get(path, {})
    }
    for code in ("200", "201"):
        answer = paths.get("/v1/deploy", {}).get("post", {}).get("responses", {}).get(code)
        if answer is not None:
            answer["links"] = links
