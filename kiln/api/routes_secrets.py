"""Secret routes: set (the value is the raw request body), list, remove, rotate the master key.

A value comes in as the body of ``PUT .../secrets/{name}`` (``application/octet-stream``) and
is never part of an answer, an error or a log line: the body is read as bytes, not parsed, so
no validation error can echo it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from kiln.api.access import requires
from kiln.api.deps import Actor, Key
from kiln.api.schemas import DeployResultOut, deploy_result_out
from kiln.controller.service import Service
from kiln.controller.views import SecretSetResult
from kiln.errors import InvalidInput
from kiln.model.access import Permission
from kiln.spec import MAX_SECRET_BYTES
from kiln.spec.stateful import SECRET_NAME_PATTERN

SecretName = Annotated[
    str, Path(pattern=SECRET_NAME_PATTERN, description="letters, digits and _, e.g. DB_PASSWORD")
]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class SecretOut(_Out):
    name: str
    version: int = Field(description="the newest version")
    versions: int = Field(description="how many versions are kept")
    created_at: datetime = Field(description="when the newest version was set")
    created_by: str
    in_use: int | None = Field(description="the version the app's target release pins")


class SecretSetOut(_Out):
    name: str
    version: int
    changed: bool = Field(description="false: the value equals the newest version")
    deploy: DeployResultOut | None = None
    message: str = ""


class KeyRotationOut(_Out):
    key_id: str = Field(description="the master key's id (a fingerprint, not the key)")
    reencrypted: int
    retired: list[str] = Field(description="old key ids dropped from $KILN_HOME/master.key")
    unused_env_keys: list[str] = Field(
        description="ids of KILN_MASTER_KEY keys no secret needs any more: drop them there"
    )


def _set_out(result: SecretSetResult) -> SecretSetOut:
    return SecretSetOut(
        name=result.name,
        version=result.version,
        changed=result.changed,
        deploy=deploy_result_out(result.deploy) if result.deploy else None,
        message=result.message,
    )


_SECRETS = [requires(Permission.SECRETS)]


def secrets_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["secrets"])

    # Secrets of an environment: only a token that holds SECRETS there (the path's {env}).
    @router.get(
        "/apps/{env}/{app}/secrets",
        summary="An app's secrets: names and versions only",
        dependencies=_SECRETS,
    )
    async def list_secrets(key: Key) -> list[SecretOut]:
        return [
            SecretOut(
                name=s.name,
                version=s.version,
                versions=s.versions,
                created_at=s.created_at,
                created_by=s.created_by,
                in_use=s.in_use,
            )
            for s in await service.list_secrets(key)
        ]

    @router.put(
        "/apps/{env}/{app}/secrets/{name}",
        summary="Set a secret: the request body is the value (bytes); a new version",
        dependencies=_SECRETS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    async def set_secret(
        key: Key,
        name: SecretName,
        request: Request,
        who: Actor,
        deploy: Annotated[
            bool, Query(description="also release the target release again with it")
        ] = False,
    ) -> SecretSetOut:
        value = await request.body()
        if len(value) > MAX_SECRET_BYTES:
            raise InvalidInput(
                f"a secret is at most {MAX_SECRET_BYTES // 1024} KiB, got {len(value)} bytes"
            )
        result = await service.set_secret(key, name, value, deploy=deploy, who=who)
        del value
        return _set_out(result)

    @router.delete(
        "/apps/{env}/{app}/secrets/{name}",
        summary="Remove every version of a secret (refused while a serving release pins it)",
        dependencies=_SECRETS,
        status_code=status.HTTP_204_NO_CONTENT,
    )
    async def remove_secret(key: Key, name: SecretName, who: Actor) -> Response:
        await service.remove_secret(key, name, who=who)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.post(
        "/secrets/rotate-key",
        summary="Re-encrypt every secret under a new master key (no instance changes)",
        dependencies=[requires(Permission.ADMIN)],
    )
    async def rotate_key(who: Actor) -> KeyRotationOut:
        rotation = await service.rotate_master_key(who=who)
        return KeyRotationOut(
            key_id=rotation.key_id,
            reencrypted=rotation.reencrypted,
            retired=rotation.retired,
            unused_env_keys=rotation.unused_env_keys,
        )

    return router
