"""``GET /metrics``: Prometheus text exposition (behind the token like every route), and the
middleware that times every API request by its route template.

A scraper sends the API token as a bearer token (Prometheus: ``authorization: {credentials:
TOKEN}``, or ``bearer_token_file``). ``metrics.enabled: false`` in the settings file makes it a
404. A token limited to environments reads only the series of its environments' apps, none of
the kiln-wide ones (``kiln.metrics.visibility``); a scraper's token sees every environment.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kiln.api.access import Read
from kiln.controller.service import Service
from kiln.metrics import CONTENT_TYPE, exposition_for


def metrics_router(service: Service) -> APIRouter:
    router = APIRouter(tags=["metrics"])

    @router.get(
        "/metrics",
        summary="Prometheus metrics: platform, instances, per-release traffic, host",
        description=(
            "A token limited to environments gets only the series whose `env` label is one of"
            " them, and none of the kiln-wide series (sums over every environment, the host);"
            " a token for every environment gets everything."
        ),
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}, "description": "text format 0.0.4"}},
    )
    async def metrics(grant: Read) -> Response:
        text = await service.metrics()
        if environments := grant.principal.environments:
            # Parsing the whole exposition is CPU work: off the event loop.
            text = await asyncio.to_thread(exposition_for, text, environments)
        return Response(text, media_type=CONTENT_TYPE)

    return router


class RequestTiming:
    """Outermost middleware: one observation per request, labelled with the matched route's
    template (``/v1/apps/{env}/{app}``, never the raw path: label sets stay bounded)."""

    def __init__(self, app: ASGIApp, *, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = getattr(scope.get("route"), "path", None)
            self.service.observe_api_request(
                route if isinstance(route, str) else "(unmatched)",
                str(scope.get("method", "")),
                status,
                time.perf_counter() - started,
            )
