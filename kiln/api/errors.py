"""The one mapping from errors to HTTP answers.

Every error leaves the API in the same JSON shape::

    {"error": {"type": "not_found", "message": "...", "problems": ["field.path: ..."]}}

``type`` is the snake_case name of the ``kiln.errors`` class (``spec_invalid``, ``conflict``
...), so the client can raise the same class again. Unexpected exceptions become a 500 whose
body says only "internal error, see the server log"; the traceback goes to the server log.
An error never echoes unbounded input: messages and problems are cut to a fixed length.

A client that goes away in the middle of a stream is not an error: it is logged in one line at
debug level, not as a traceback.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kiln.api.schemas import ErrorOut
from kiln.errors import (
    Conflict,
    Forbidden,
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
    (Forbidden, 403),
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


MAX_MESSAGE_CHARS = 4000
MAX_PROBLEM_CHARS = 300
MAX_PROBLEMS = 50


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def _body(kind: str, message: str, problems: Sequence[str] = ()) -> dict[str, Any]:
    shown = [clip(p, MAX_PROBLEM_CHARS) for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        shown.append(f"… and {len(problems) - MAX_PROBLEMS} more problems")
    return {"error": {"type": kind, "message": clip(message, MAX_MESSAGE_CHARS), "problems": shown}}


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
    """``body.instances: Input should be greater than or equal to 0`` — a field path and why.

    The path's parts come from the request (an unknown field's name), so each is cut short.
    """
    path = ".".join(clip(str(part), 60) for part in error.get("loc", ())) or "(request)"
    return f"{path}: {clip(str(error.get('msg', 'is not valid')), 200)}"


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


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette raises these for unknown paths and wrong methods, FastAPI for a body it cannot
    # parse; same shape as ours.
    assert isinstance(exc, StarletteHTTPException)
    kind = _HTTP_KINDS.get(
        exc.status_code, "invalid_input" if exc.status_code < 500 else "internal"
    )
    headers = dict(exc.headers) if exc.headers else {}
    message = str(exc.detail)
    if exc.status_code == 405:
        allowed = allowed_methods(request.app, request.url.path)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
        message = f"{request.method} is not allowed here; allowed: {headers.get('Allow', '')}"
    elif exc.status_code == 400 and exc.__cause__ is not None:
        message = _why_unparsable(exc.__cause__)
    return error_response(exc.status_code, kind, message, headers=headers or None)


def _why_unparsable(cause: BaseException) -> str:
    if isinstance(cause, RecursionError):
        return "the request body is nested too deeply to parse"
    if isinstance(cause, UnicodeDecodeError):
        return "the request body is not UTF-8"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "a number in the request body has too many digits"
    return "the request body is not valid JSON"


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document lists for ``path`` (HEAD with GET), for ``Allow``."""
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        app.state, "kiln_allow_table", None
    )
    if table is None:
        table = []
        for template, operations in app.openapi().get("paths", {}).items():
            pattern = re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")
            methods = sorted(m.upper() for m in operations)
            if "GET" in methods:
                methods.append("HEAD")
            table.append((pattern, methods))
        app.state.kiln_allow_table = table
    allowed: set[str] = set()
    for pattern, methods in table:
        if pattern.match(path):
            allowed.update(methods)
    return sorted(allowed)


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
        except Exception as exc:
            if client_went_away(exc):
                # Leaving a stream is how a client ends it (Ctrl-C on `kiln events -f`).
                log.debug("client left %s %s", scope.get("method"), scope.get("path"))
                return
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                # The status line is gone already; ending here makes the server close the
                # connection, so the client sees a truncated stream rather than a lie.
                return
            response = error_response(500, "internal", INTERNAL_ERROR_MESSAGE)
            await response(scope, receive, send)


_CLIENT_GONE = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    ClientDisconnect,
    BrokenPipeError,
    ConnectionResetError,
)


def client_went_away(exc: BaseException) -> bool:
    """The error (or every error in a group) says the client closed the connection."""
    if isinstance(exc, BaseExceptionGroup):
        return all(client_went_away(inner) for inner in exc.exceptions)
    return isinstance(exc, _CLIENT_GONE)


ErrorOutDoc: dict[int | str, dict[str, Any]] = {
    status: {"description": why, "model": ErrorOut}
    for status, why in (
        (400, "a body that is not JSON, nested too deeply, or with a number too long"),
        (401, "missing, wrong or revoked token"),
        (403, "the token's role or environments do not allow this call"),
        (404, "unknown app, release or instance"),
        (409, "conflicts with the current state"),
        (413, "the request body is over the size limit"),
        (422, "invalid input; `problems` names each field"),
        (500, "internal error, see the server log"),
        (503, "temporarily unavailable (engine or NGINX), retry"),
    )
}
"""The error answers every route may give, for the OpenAPI document."""
