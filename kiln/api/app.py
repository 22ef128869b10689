"""``create_app(service, token=..., installation_id=...)``: the kiln HTTP API as a FastAPI app.

    request ─▶ CatchAllMiddleware ─▶ RequestGuard ─▶ token check ─▶ route ─▶ Service (the Engine)
                  │ unexpected → 500      │ size, depth          │ KilnError → one status
                  │ client gone → quiet   │ → 413 / 400          │   mapping (errors.py)

Everything needs the bearer token except ``GET /healthz`` (is kiln up?) and
``POST /v1/identify``, where a client that has not yet sent its token checks that this server
holds the same token: the answer is an HMAC of the client's nonce keyed with the token
(``kiln.config.identity_proof``). A program squatting on kiln's TCP port cannot forge it, so
the client never hands its token to one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, status
from fastapi.openapi.utils import get_openapi

import kiln
from kiln.api.auth import TokenCheck
from kiln.api.deps import PRINCIPAL, only_known_query_parameters
from kiln.api.errors import ErrorOutDoc, install_error_handlers
from kiln.api.limits import RequestGuard
from kiln.api.routes_apps import apps_router
from kiln.api.routes_metrics import RequestTiming, metrics_router
from kiln.api.routes_promotion import promotion_router
from kiln.api.routes_rollouts import rollouts_router
from kiln.api.routes_streams import streams_router
from kiln.api.schemas import HealthOut, IdentifyRequest, IdentityOut
from kiln.api.ui import create_ui_app, token_authenticator
from kiln.config import identity_proof
from kiln.controller.service import Service
from kiln.spec import spec_json_schema

_ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorOut"}


def create_app(service: Service, *, token: str, installation_id: str | None = None) -> FastAPI:
    """The API over ``service``; ``installation_id`` is what ``/v1/identify`` names (the
    server passes ``kiln.config.read_or_create_installation_id(settings)``)."""
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
    app.add_middleware(RequestGuard)
    install_error_handlers(app)
    app.add_middleware(RequestTiming, service=service)  # outermost: sees the final status
    check_token = TokenCheck(token)

    @app.get("/healthz", summary="Liveness of the kiln server (no token needed)", tags=["server"])
    async def healthz() -> HealthOut:
        return HealthOut(ok=True, version=version)

    @app.post(
        "/v1/identify",
        summary="Prove this server holds the API token, without the client sending it",
        tags=["server"],
    )
    async def identify(body: IdentifyRequest) -> IdentityOut:
        return IdentityOut(
            installation_id=installation_id,
            version=version,
            proof=identity_proof(token, body.nonce),
        )

    protected = APIRouter(dependencies=[Depends(check_token)])
    protected.include_router(apps_router(service))
    protected.include_router(rollouts_router(service))
    protected.include_router(promotion_router(service))
    protected.include_router(streams_router(service))
    protected.include_router(metrics_router(service))

    @protected.get("/v1/schema", summary="JSON Schema of kiln.yaml", tags=["server"])
    async def schema() -> dict[str, Any]:
        return spec_schema

    @protected.post(
        "/v1/shutdown",
        summary="Stop the kiln server (NGINX and the apps keep serving)",
        status_code=status.HTTP_202_ACCEPTED,
        tags=["server"],
    )
    async def shutdown(background: BackgroundTasks) -> dict[str, bool]:
        # After the answer is sent, so the caller hears "accepted" before the server goes.
        background.add_task(service.request_shutdown)
        return {"accepted": True}

    @protected.get("/openapi.json", include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    app.include_router(protected)
    # The dashboard signs in with the same token, kept in a cookie (kiln.api.ui.session).
    app.mount("/ui", create_ui_app(service, authenticate=token_authenticator(token, PRINCIPAL)))
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
