"""``create_app(service, token=...)``: the kiln HTTP API as a FastAPI application.

    request ─▶ CatchAllMiddleware ─▶ token check ─▶ route ─▶ Service (the Engine)
                  │ unexpected error → 500          │ KilnError → one status mapping (errors.py)

Everything needs the bearer token except ``GET /healthz``, which the CLI uses to see whether
kiln is up before it has read the token.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, status

import kiln
from kiln.api.auth import TokenCheck
from kiln.api.errors import ErrorOutDoc, install_error_handlers
from kiln.api.routes_apps import apps_router
from kiln.api.routes_streams import streams_router
from kiln.api.schemas import HealthOut
from kiln.controller.service import Service
from kiln.spec import spec_json_schema


def create_app(service: Service, *, token: str) -> FastAPI:
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
    )
    install_error_handlers(app)

    @app.get("/healthz", summary="Liveness of the kiln server (no token needed)", tags=["server"])
    async def healthz() -> HealthOut:
        return HealthOut(ok=True, version=version)

    protected = APIRouter(dependencies=[Depends(TokenCheck(token))])
    protected.include_router(apps_router(service))
    protected.include_router(streams_router(service))

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
    return app
