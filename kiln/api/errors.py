"""The one mapping from errors to HTTP answers.

Every error leaves the API in the same JSON shape::

    {"error": {"type": "not_found", "message": "...", "problems": ["field.path: ..."]}}

``type`` is the snake_case name of the ``kiln.errors`` class (``spec_invalid``, ``conflict``
...), so the client can raise the same class again. Unexpected exceptions become a 500 whose
body says only "internal error, see the server log"; the traceback goes to the server log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kiln.api.schemas import ErrorOut
from kiln.errors import (
    Conflict,
    InvalidInput,
    KilnError,
    NotFound,
    SpecInvalid,
    TemporaryFailure,
    Unauthorized,
    wire_name,
)

log = logging.getLogger("kiln.api")

INTERNAL_ERROR_MESSAGE = "internal error, see the server log"

# Most specific first: the first matching class decides the status.
_STATUS_BY_ERROR: tuple[tuple[type[KilnError], int], ...] = (
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (Unauthorized, 401),
    (TemporaryFailure, 503),
)


def status_for(exc: KilnError) -> int:
    for cls, status in _STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500  # PermanentFailure and any other KilnError


def error_response(
    status: int,
    kind: str,
    message: str,
    problems: Sequence[str] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(_body(kind, message, problems), status_code=status, headers=headers)


def _body(kind: str, message: str, problems: Sequence[str] = ()) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, "problems": list(problems)}}


def error_body(exc: Exception) -> dict[str, Any]:
    """The JSON body that stands for ``exc``; anything but a KilnError is an internal error."""
    if isinstance(exc, KilnError):
        problems = exc.problems if isinstance(exc, SpecInvalid) else []
        return _body(wire_name(type(exc)), exc.message, problems)
    return _body("internal", INTERNAL_ERROR_MESSAGE)


def kiln_error_response(exc: KilnError) -> JSONResponse:
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.message)
    return JSONResponse(error_body(exc), status_code=status, headers=headers)


def describe_validation_error(error: dict[str, Any]) -> str:
    """``body.instances: Input should be greater than or equal to 0`` — a field path and why."""
    path = ".".join(str(part) for part in error.get("loc", ())) or "(request)"
    return f"{path}: {error.get('msg', 'is not valid')}"


async def _on_kiln_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KilnError)
    return kiln_error_response(exc)


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [describe_validation_error(dict(e)) for e in exc.errors()]
    count = len(problems)
    message = f"the request has {count} problem{'s' if count != 1 else ''}:\n" + "\n".join(
        f"  - {p}" for p in problems
    )
    return error_response(422, "invalid_input", message, problems)


_HTTP_KINDS = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 409: "conflict"}


async def _on_http_error(_request: Request, exc: Exception) -> JSONResponse:
    # Starlette raises these for unknown paths and wrong methods; same shape as ours.
    assert isinstance(exc, StarletteHTTPException)
    kind = _HTTP_KINDS.get(
        exc.status_code, "invalid_input" if exc.status_code < 500 else "internal"
    )
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, kind, str(exc.detail), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(KilnError, _on_kiln_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_middleware(CatchAllMiddleware)


class CatchAllMiddleware:
    """Turns an unexpected exception into a 500 JSON answer and logs its traceback.

    A plain ``Exception`` handler is not enough: Starlette's ServerErrorMiddleware sends the
    answer and then re-raises, which would print the traceback a second time and make test
    clients raise. This middleware sits inside it and swallows the exception after logging.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                # The status line is gone already; ending here makes the server close the
                # connection, so the client sees a truncated stream rather than a lie.
                return
            response = error_response(500, "internal", INTERNAL_ERROR_MESSAGE)
            await response(scope, receive, send)


ErrorOutDoc: dict[int | str, dict[str, Any]] = {
    status: {"description": why, "model": ErrorOut}
    for status, why in (
        (401, "missing or wrong token"),
        (404, "unknown app, release or instance"),
        (409, "conflicts with the current state"),
        (422, "invalid input; `problems` names each field"),
        (500, "internal error, see the server log"),
        (503, "temporarily unavailable (engine or NGINX), retry"),
    )
}
"""The error answers every route may give, for the OpenAPI document."""
