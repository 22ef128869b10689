"""The audit log: every call that changes something, and every refused call, as one entry.

    request ─▶ AuditMiddleware ─▶ ... ─▶ route ─▶ answer
                    └─ after the answer: a POST/PUT/PATCH/DELETE (not /v1/identify, which
                       changes nothing), or any 401/403 ─▶ AccessStore.append_audit

An entry says who (the token's name — also a revoked one's — and where from: ``uid=N(name)``
on the unix socket as the kernel says, ``tcp HOST:PORT`` otherwise, plus the client's
``X-Kiln-Actor`` claim), what (method, path, environment and app), when, the status and
outcome (ok, refused, failed with the error's type and message) and the release the call made
(from the answer's ``release``). A JSON answer is read up to 64 KiB for this; streams are
never mutating, so never held. An entry that cannot be written is logged as an error; the
call's answer has already been decided.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kiln.api.access import PRINCIPAL_STATE, TOKEN_NAME_STATE, is_public
from kiln.api.peer import peer_of
from kiln.model.access import NewAuditEntry, Principal
from kiln.store.aio import AsyncAccessStore

log = logging.getLogger("kiln.api")

_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_BODY = 64 * 1024
_MAX_TEXT = 500


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _clip(text: str, limit: int = _MAX_TEXT) -> str:
    text = "".join(c for c in text if c.isprintable())
    return text if len(text) <= limit else text[:limit] + "…"


def where_from(scope: Scope) -> str:
    if (peer := peer_of(scope)) is not None:
        return f"uid={peer.uid}({peer.user})"
    client = scope.get("client")
    if client:
        return f"tcp {client[0]}:{client[1]}"
    return "unknown"


class AuditMiddleware:
    def __init__(
        self, app: ASGIApp, *, store: AsyncAccessStore, clock: Callable[[], datetime] = _utc_now
    ) -> None:
        self.app = app
        self.store = store
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        mutating = scope["method"] not in _READS
        answer: dict[str, Any] = {"status": None, "body": b"", "json": False}

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = int(message["status"])
                headers = dict(message.get("headers") or [])
                answer["json"] = headers.get(b"content-type", b"").startswith(b"application/json")
            elif (
                message["type"] == "http.response.body"
                and answer["json"]
                and len(answer["body"]) < _MAX_BODY
            ):
                answer["body"] += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except BaseException:
            if answer["status"] is None:
                answer["status"] = 500
            raise
        finally:
            status = answer["status"]
            if status is not None and (
                status in (401, 403) or (mutating and _changes_something(scope.get("route")))
            ):
                await self._record(scope, status, answer["body"])

    async def _record(self, scope: Scope, status: int, body: bytes) -> None:
        try:
            # Shielded: a request cancelled mid-way (client gone) still leaves its entry.
            await asyncio.shield(
                self.store.append_audit(_entry(scope, status, body), now=self.clock())
            )
        except Exception:
            log.exception(
                "could not write the audit entry for %s %s (%d)",
                scope.get("method"),
                scope.get("path"),
                status,
            )


def _changes_something(route: object) -> bool:
    # No route: a 404 or 405 that reached no code; a public route (identify) changes nothing.
    return route is not None and not is_public(route)


def _entry(scope: Scope, status: int, body: bytes) -> NewAuditEntry:
    state = scope.get("state") or {}
    principal = state.get(PRINCIPAL_STATE)
    token = principal.name if isinstance(principal, Principal) else state.get(TOKEN_NAME_STATE)
    params = scope.get("path_params") or {}
    env, app = params.get("env"), params.get("app")
    data: Any = None
    if body:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
    release: int | None = None
    detail = ""
    if isinstance(data, dict):
        made = data.get("release")
        if status < 400 and isinstance(made, dict) and isinstance(made.get("number"), int):
            release = made["number"]
            env = env or made.get("environment")
            app = app or made.get("app")
        error = data.get("error")
        if isinstance(error, dict):
            detail = f"{error.get('type', 'error')}: {error.get('message', '')}"
    claimed = ""
    for name, value in scope.get("headers") or []:
        if name == b"x-kiln-actor":
            claimed = value.decode("latin-1")
    outcome = "ok" if status < 400 else "refused" if status in (401, 403) else "failed"
    return NewAuditEntry(
        token=token if isinstance(token, str) else None,
        peer=where_from(scope),
        claimed=_clip(claimed, 200),
        method=str(scope.get("method", "")),
        path=_clip(str(scope.get("path", ""))),
        environment=_clip(env, 100) if isinstance(env, str) else None,
        app=_clip(app, 100) if isinstance(app, str) else None,
        status=status,
        outcome=outcome,
        release=release,
        detail=_clip(detail),
    )
