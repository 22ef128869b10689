"""Routes of kiln's images: build (the client uploads the context), the catalogue, prune.

    POST /v1/images/build?repository=web&tag=1.4[&dockerfile=…][&label=k=v…]
         body: the build context as a tar (application/octet-stream); the engine kiln runs on builds
         it, kiln pushes it to its registry and answers the pinned reference
    GET  /v1/images[?repository=web]       tags, digests, sizes, provenance, releases, instances
    POST /v1/images/prune {"dry_run": false}

Why the server builds: the engine that runs the instances (and the registry's login) belong to
the server, and the CLI never talks to Docker; the client only sends the source's bytes and
their provenance (git commit, dirty or not), which only it can see.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from kiln.api.access import requires
from kiln.api.deps import Actor
from kiln.api.schemas import ErrorOut
from kiln.controller.images import BuildResult, ImageView
from kiln.controller.service import Service
from kiln.errors import InvalidInput
from kiln.model.access import Permission

BUILD_PATH = "/v1/images/build"
MAX_BUILD_CONTEXT_BYTES = 512 * 1024 * 1024
"""The largest build context the API takes (it is held in memory while the engine builds)."""
_MAX_LABELS = 64


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class BuildOut(_Out):
    reference: str = Field(description="host/repository@sha256:… — what a spec's image: takes")
    repository: str
    tag: str
    digest: str
    image_id: str
    size: int | None
    labels: dict[str, str]
    cached: bool = Field(description="the same source was built before: nothing was built")
    pushed: bool


class ImageOut(_Out):
    repository: str
    tag: str
    digest: str
    reference: str
    size: int | None
    image_id: str
    provenance: dict[str, str]
    created_at: datetime
    created_by: str
    releases: list[str]
    running: list[str]


class PruneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: bool = False


class PruneOut(_Out):
    removed: list[ImageOut]
    kept: list[ImageOut]
    collected: str
    dry_run: bool


def _image_out(view: ImageView) -> ImageOut:
    return ImageOut(**view.__dict__)


def _build_out(result: BuildResult) -> BuildOut:
    return BuildOut(**result.__dict__)


def _labels(raw: list[str]) -> dict[str, str]:
    if len(raw) > _MAX_LABELS:
        raise InvalidInput(f"at most {_MAX_LABELS} labels, got {len(raw)}")
    labels = {}
    for item in raw:
        name, eq, value = item.partition("=")
        if not eq or not name or not name.isprintable() or not value.isprintable():
            raise InvalidInput(f"label {item[:80]!r} must be NAME=VALUE (printable text)")
        labels[name] = value
    return labels


def images_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/v1/images", tags=["images"])
    bad: dict[int | str, dict[str, Any]] = {
        400: {"description": "bad name, labels or context; the build failed", "model": ErrorOut},
        409: {"description": "the tag already means another image", "model": ErrorOut},
    }

    @router.post(
        "/build",
        summary="Build the uploaded context (a tar), push it, answer its registry digest",
        responses=bad,
        dependencies=[requires(Permission.DEPLOY)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    async def build(
        request: Request,
        who: Actor,
        repository: Annotated[str, Query(min_length=1, max_length=255)],
        tag: Annotated[str, Query(min_length=1, max_length=128)],
        dockerfile: Annotated[str, Query(min_length=1, max_length=255)] = "Dockerfile",
        label: Annotated[list[str] | None, Query(max_length=1024)] = None,
    ) -> BuildOut:
        context = await request.body()
        if not context:
            raise InvalidInput("the request body must be the build context as a tar")
        result = await service.build_image(
            context,
            repository=repository,
            tag=tag,
            labels=_labels(label or []),
            dockerfile=dockerfile,
            who=who,
        )
        return _build_out(result)

    @router.get(
        "",
        summary="kiln's images: tags, digests, sizes, provenance, where they run",
        dependencies=[requires(Permission.READ)],
    )
    async def list_images(
        repository: Annotated[str | None, Query(max_length=255)] = None,
    ) -> list[ImageOut]:
        return [_image_out(v) for v in await service.list_images(repository)]

    @router.post(
        "/prune",
        summary="Remove images no release inside retention and no instance needs",
        responses={400: {"description": "no registry to prune", "model": ErrorOut}},
        # Deletes images of every environment's history: the installation's admin decides.
        dependencies=[requires(Permission.ADMIN)],
    )
    async def prune(who: Actor, body: Annotated[PruneRequest | None, Body()] = None) -> PruneOut:
        result = await service.prune_images(
            dry_run=body.dry_run if body is not None else False, who=who
        )
        return PruneOut(
            removed=[_image_out(v) for v in result.removed],
            kept=[_image_out(v) for v in result.kept],
            collected=result.collected,
            dry_run=result.dry_run,
        )

    return router
