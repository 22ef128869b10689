"""Routes that manage API tokens and read the audit log (admin tokens only).

POST   /v1/tokens          {name, role, environments}: 201 with the token, shown this once
GET    /v1/tokens          active tokens (revoked=true: the revoked ones too); never a token
DELETE /v1/tokens/{name}   revoke at once (not the last admin, not the caller's own)
GET    /v1/audit           audit entries, oldest first; env/app, since, after, limit
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from kiln.api.access import Grant, access_store, requires
from kiln.api.deps import Actor
from kiln.api.schemas import MAX_ID, ErrorOut
from kiln.config import token_hash, token_id
from kiln.errors import Conflict, InvalidInput
from kiln.model.access import AuditEntry, Permission, Role, TokenRecord
from kiln.spec.model import NAME_PATTERN

TOKEN_BYTES = 32
MAX_TOKEN_ENVIRONMENTS = 20


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN, description="a lowercase DNS label, e.g. ci-staging")
    role: Role = Field(description="viewer: reads; deployer: reads, deploys, secrets; admin: all")
    environments: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        default_factory=list,
        max_length=MAX_TOKEN_ENVIRONMENTS,
        description="the environments the token may act in; empty: every one (an admin "
        "token is always for every environment)",
    )


class TokenOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    role: Role
    environments: list[str] = Field(description="empty: every environment")
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None


class NewTokenOut(TokenOut):
    token: str = Field(description="the token itself: shown this once, kiln keeps only a hash")


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: int
    at: datetime
    token: str | None = Field(description="the token's name; null: none, or an unknown one")
    peer: str = Field(description="uid=N(name) on the unix socket, tcp HOST:PORT over TCP")
    claimed: str = Field(description="the client's X-Kiln-Actor: a claim, not verified")
    method: str
    path: str
    environment: str | None
    app: str | None
    status: int
    outcome: str = Field(description="ok, refused (401/403) or failed")
    release: int | None = Field(description="the release the call made")
    detail: str = Field(description="the error's type and message, when it failed")


def token_out(record: TokenRecord) -> TokenOut:
    return TokenOut(
        name=record.name,
        role=record.role,
        environments=sorted(record.environments),
        created_at=record.created_at,
        created_by=record.created_by,
        revoked_at=record.revoked_at,
        revoked_by=record.revoked_by,
    )


def audit_out(entry: AuditEntry) -> AuditEntryOut:
    return AuditEntryOut.model_validate(entry, from_attributes=True)


_ADMIN = requires(Permission.ADMIN)
_TOKEN_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no active token of that name", "model": ErrorOut},
    409: {"description": "the last admin token, or the caller's own", "model": ErrorOut},
}


_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _rfc3339_only(value: object) -> object:
    # pydantic would also take a bare number as a Unix time; the document says date-time.
    if isinstance(value, str) and not _RFC3339.match(value):
        raise ValueError("must be a date and time like 2026-12-01T09:30:00Z")
    return value


def access_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["access"])

    @router.post(
        "/tokens",
        summary="Create an API token with a role (admin); the answer holds it, this once",
        status_code=status.HTTP_201_CREATED,
        responses={409: {"description": "an active token has that name", "model": ErrorOut}},
    )
    async def create_token(
        body: TokenRequest, request: Request, who: Actor, grant: Annotated[Grant, _ADMIN]
    ) -> NewTokenOut:
        if body.role is Role.ADMIN and body.environments:
            raise InvalidInput(
                "an admin token is for every environment; for one environment use "
                "--role deployer (or viewer) with --env"
            )
        token = secrets.token_urlsafe(TOKEN_BYTES)
        record = await access_store(request.app).add_token(
            TokenRecord(
                name=body.name,
                role=body.role,
                environments=frozenset(body.environments),
                token_id=token_id(token),
                token_hash=token_hash(token),
                created_at=datetime.now(UTC),
                created_by=who,
            )
        )
        return NewTokenOut(**token_out(record).model_dump(), token=token)

    @router.get("/tokens", summary="API tokens: names, roles, environments (never the tokens)")
    async def list_tokens(
        request: Request,
        grant: Annotated[Grant, _ADMIN],
        revoked: Annotated[bool, Query(description="the revoked tokens too")] = False,
    ) -> list[TokenOut]:
        return [token_out(t) for t in await access_store(request.app).list_tokens(revoked=revoked)]

    @router.delete(
        "/tokens/{name}",
        summary="Revoke a token: it stops working at once",
        responses=_TOKEN_ERRORS,
    )
    async def revoke_token(
        name: Annotated[str, Path(pattern=NAME_PATTERN, description="the token's name")],
        request: Request,
        who: Actor,
        grant: Annotated[Grant, _ADMIN],
    ) -> TokenOut:
        if name == grant.principal.name:
            raise Conflict(
                f"{name!r} is the token this request uses; revoke it with another admin token"
            )
        revoked = await access_store(request.app).revoke_token(name, by=who, now=datetime.now(UTC))
        return token_out(revoked)

    @router.get("/audit", summary="The audit log: every change and every refused call")
    async def audit(
        request: Request,
        grant: Annotated[Grant, _ADMIN],
        env: Annotated[
            str | None, Query(pattern=NAME_PATTERN, description="only this environment")
        ] = None,
        app: Annotated[
            str | None, Query(pattern=NAME_PATTERN, description="only this app (of env, or dev)")
        ] = None,
        since: Annotated[
            datetime | None,
            BeforeValidator(_rfc3339_only),
            Query(description="only entries at or after this time (RFC 3339; no zone: UTC)"),
        ] = None,
        after: Annotated[int, Query(ge=0, le=MAX_ID, description="only entries after this id")] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[AuditEntryOut]:
        if since is not None:
            try:
                since = since.replace(tzinfo=UTC) if since.tzinfo is None else since
                since = since.astimezone(UTC)
            except (OverflowError, ValueError) as exc:
                raise InvalidInput(f"since is out of range: {exc}") from exc
        entries = await access_store(request.app).list_audit(
            environment=env or ("dev" if app else None),
            app=app,
            since=since,
            after_id=after,
            limit=limit,
        )
        return [audit_out(e) for e in entries]

    return router
