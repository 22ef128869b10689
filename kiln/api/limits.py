"""Bounds on what a request may carry, checked before anything parses it.

    request ─▶ RequestGuard ─────────────────────────────────────────────▶ the app
                 │ Content-Length over MAX_BODY_BYTES       → 413 (body never read)
                 │ body grows over MAX_BODY_BYTES           → 413 (reading stops there)
                 │ JSON nested deeper than MAX_JSON_DEPTH   → 400 (json.loads never sees it)
                 └ a number longer than MAX_NUMBER_DIGITS   → 400

Every answer is the API's one JSON error shape. Integers that reach the store are bounded in
the wire schemas (``MAX_ID``, well inside SQLite's signed 64 bits), so a huge id is a 422.
"""

from __future__ import annotations

import re
from itertools import accumulate

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kiln.api.errors import error_response
from kiln.api.routes_images import BUILD_PATH, MAX_BUILD_CONTEXT_BYTES
from kiln.api.schemas import MAX_ID
from kiln.spec import MAX_SPEC_BYTES

__all__ = ["MAX_BODY_BYTES", "MAX_ID", "MAX_SPEC_BYTES", "RequestGuard", "json_problem"]

MAX_BODY_BYTES = 2 * MAX_SPEC_BYTES + 16 * 1024
"""A deploy body carries the spec as a JSON string, where a newline or a quote takes two bytes:
twice the spec limit (plus room for the message) admits every spec the spec limit admits."""

MAX_JSON_DEPTH = 32
"""Every request body of this API is a flat object; 32 levels leave room and stop the 20,000
deep ``[[[[...`` that would exhaust the parser's recursion."""

MAX_NUMBER_DIGITS = 40
"""Longer numbers are never meaningful here (an id has at most 19 digits) and cost quadratic
time to convert; Python refuses beyond 4,300 digits anyway, with a less helpful message."""

_SCAN_INLINE_BYTES = 64 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Possessive (``*+``): a string that never closes runs to the end of the body in one pass
# instead of being retried from every later quote, so the scan stays linear in the body.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+"?', re.DOTALL)
_LONG_NUMBER = re.compile(rb"[0-9]{%d,}" % (MAX_NUMBER_DIGITS + 1))
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_problem(body: bytes) -> str | None:
    """Why ``body`` is refused before parsing (too deep, too long a number), or None.

    Strings are blanked first, so brackets and digits inside a spec's text do not count.
    Malformed JSON is left to the parser, which names the position.
    """
    skeleton = _JSON_STRING.sub(b'""', body)
    if _LONG_NUMBER.search(skeleton):
        return f"a number in the request body has more than {MAX_NUMBER_DIGITS} digits"
    brackets = skeleton.translate(None, _NOT_BRACKETS)
    if len(brackets) > MAX_JSON_DEPTH:
        steps = (1 if b in b"[{" else -1 for b in brackets)
        if max(accumulate(steps), default=0) > MAX_JSON_DEPTH:
            return f"the request body is nested deeper than {MAX_JSON_DEPTH} levels"
    return None


def too_large_message(size: int | None) -> str:
    said = f" ({size} bytes)" if size is not None else ""
    return (
        f"the request body is too large{said}: kiln accepts at most {MAX_BODY_BYTES} bytes "
        f"(a kiln.yaml may be at most {MAX_SPEC_BYTES // 1024} KiB)"
    )


class RequestGuard:
    """ASGI middleware: reads a request body up to its limit, checks it, then replays it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        # A build context is a tar of any size up to its own limit, not JSON: not scanned.
        is_build = scope.get("path") == BUILD_PATH
        limit = MAX_BUILD_CONTEXT_BYTES if is_build else MAX_BODY_BYTES
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isascii() or not declared.isdigit() or len(declared) > 18:
                await error_response(400, "invalid_input", "bad Content-Length header")(
                    scope, receive, send
                )
                return
            if int(declared) > limit:
                await error_response(413, "invalid_input", too_large_message(int(declared)))(
                    scope, receive, send
                )
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await error_response(413, "invalid_input", too_large_message(None))(
                    scope, receive, send
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if is_build:
            await self.app(scope, _replay(body, receive), send)
            return
        # A big body takes tens of milliseconds to scan: not on the event loop.
        if len(body) > _SCAN_INLINE_BYTES:
            problem = await anyio.to_thread.run_sync(json_problem, body)
        else:
            problem = json_problem(body)
        if problem:
            await error_response(400, "invalid_input", problem)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server would

    return replay
