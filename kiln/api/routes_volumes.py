"""Volume routes: list, inspect, remove; snapshot and restore as NDJSON progress streams.

A copy can take a while for a large volume, so snapshot and restore answer with NDJSON: a line
``{"progress": {"bytes": N, "total": T}}`` now and then (``total`` null when unknown), then
``{"snapshot": {...}}`` — or ``{"error": {...}}`` (the usual error shape) if it failed. An
unknown app or volume is a plain 404 before the stream starts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from kiln.api.access import Grant, requires
from kiln.api.deps import Actor, Key
from kiln.api.errors import error_body
from kiln.controller.service import Service
from kiln.controller.views import VolumeView
from kiln.model import Snapshot
from kiln.model.access import Permission
from kiln.spec.stateful import VOLUME_NAME_PATTERN

NDJSON = "application/x-ndjson"
PROGRESS_EVERY = 0.25  # seconds between progress lines

VolumeName = Annotated[str, Path(pattern=VOLUME_NAME_PATTERN, description="as the spec names it")]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class SnapshotOut(_Out):
    id: str
    volume: str
    created_at: datetime
    size: int = Field(description="bytes of the archive")
    sha256: str
    consistency: str = Field(description="stopped | pre_snapshot | read_only")


class VolumeOut(_Out):
    environment: str
    app: str
    name: str
    engine_name: str
    created_at: datetime | None
    used_by: list[int] = Field(description="releases the app may run that mount it")
    snapshots: list[SnapshotOut] = Field(default_factory=list)


class RestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    snapshot: str = Field(
        min_length=1, max_length=40, pattern=r"^[0-9A-Za-z-]+$", description="its id"
    )


def snapshot_out(s: Snapshot) -> SnapshotOut:
    return SnapshotOut(
        id=s.id,
        volume=s.volume,
        created_at=s.created_at,
        size=s.size,
        sha256=s.sha256,
        consistency=s.consistency,
    )


def volume_out(v: VolumeView) -> VolumeOut:
    return VolumeOut(
        environment=v.info.key.environment,
        app=v.info.key.app,
        name=v.info.name,
        engine_name=v.info.engine_name,
        created_at=v.info.created_at,
        used_by=v.used_by,
        snapshots=[snapshot_out(s) for s in v.snapshots],
    )


def _progress_stream(
    run: Callable[[Callable[[int], None]], Awaitable[Snapshot]], total: int | None
) -> StreamingResponse:
    async def lines() -> AsyncIterator[bytes]:
        copied = [0]

        def progress(done: int) -> None:  # from the driver's worker thread
            copied[0] = done

        task: asyncio.Future[Snapshot] = asyncio.ensure_future(run(progress))
        last = -1
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=PROGRESS_EVERY)
                if copied[0] != last and not task.done():
                    last = copied[0]
                    body: dict[str, Any] = {"progress": {"bytes": last, "total": total}}
                    yield json.dumps(body).encode() + b"\n"
            made = task.result()
            yield json.dumps({"snapshot": snapshot_out(made).model_dump(mode="json")}).encode()
            yield b"\n"
        except Exception as exc:
            yield json.dumps(error_body(exc)).encode() + b"\n"
        finally:
            if not task.done():
                task.cancel()

    return StreamingResponse(lines(), media_type=NDJSON)


_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "NDJSON: progress lines, then the snapshot (or an error line)",
        "content": {NDJSON: {"schema": {"type": "object"}}},
    }
}


_READ = [requires(Permission.READ)]
_DEPLOY = [requires(Permission.DEPLOY)]


def volumes_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["volumes"])

    @router.get("/volumes", summary="Every volume of this kiln installation")
    async def all_volumes(grant: Annotated[Grant, requires(Permission.READ)]) -> list[VolumeOut]:
        views = await service.list_volumes(None)
        return [volume_out(v) for v in views if grant.sees(v.info.key.environment)]

    @router.get("/apps/{env}/{app}/volumes", summary="An app's volumes", dependencies=_READ)
    async def app_volumes(key: Key) -> list[VolumeOut]:
        return [volume_out(v) for v in await service.list_volumes(key)]

    @router.get(
        "/apps/{env}/{app}/volumes/{name}",
        summary="One volume and its snapshots",
        dependencies=_READ,
    )
    async def inspect_volume(key: Key, name: VolumeName) -> VolumeOut:
        return volume_out(await service.inspect_volume(key, name))

    @router.delete(
        "/apps/{env}/{app}/volumes/{name}",
        summary="Delete a volume and its data (refused while a release uses it)",
        dependencies=_DEPLOY,
        status_code=status.HTTP_204_NO_CONTENT,
    )
    async def remove_volume(key: Key, name: VolumeName, who: Actor) -> Response:
        await service.remove_volume(key, name, who=who)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.post(
        "/apps/{env}/{app}/volumes/{name}/snapshots",
        summary="Snapshot a volume (app stopped, its pre_snapshot run, or read-only): NDJSON progress",
        dependencies=_DEPLOY,
        response_class=StreamingResponse,
        responses=_STREAM_DOC,
    )
    async def snapshot_volume(key: Key, name: VolumeName, who: Actor) -> StreamingResponse:
        await service.inspect_volume(key, name)  # unknown: a plain 404

        def run(progress: Callable[[int], None]) -> Awaitable[Snapshot]:
            return service.snapshot_volume(key, name, who=who, progress=progress)

        return _progress_stream(run, None)

    @router.post(
        "/apps/{env}/{app}/volumes/{name}/restore",
        summary="Replace a volume's files with a snapshot (app stopped): NDJSON progress",
        dependencies=_DEPLOY,
        response_class=StreamingResponse,
        responses=_STREAM_DOC,
    )
    async def restore_volume(
        key: Key, name: VolumeName, body: RestoreRequest, who: Actor
    ) -> StreamingResponse:
        view = await service.inspect_volume(key, name)
        total = next((s.size for s in view.snapshots if s.id == body.snapshot), None)

        def run(progress: Callable[[int], None]) -> Awaitable[Snapshot]:
            return service.restore_volume(key, name, body.snapshot, who=who, progress=progress)

        return _progress_stream(run, total)

    return router
