"""Routes of environments and promotion.

POST /v1/promotions                 promote a release to the next environment (201 created;
                                    200 dry run or already there; 409 gate_refused, nothing
                                    changed, the message lists every failing gate)
POST /v1/approvals                  approve a release for the next environment (201)
GET  /v1/apps/{env}/{app}/diff?left=7&right=9     two releases of one app
GET  /v1/diff?app=web&left=staging&right=production   what an app runs in two environments
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from kiln.api.access import Grant, requires
from kiln.api.deps import Actor, Key
from kiln.api.promotion_schemas import (
    ApprovalOut,
    ApproveRequest,
    DiffOut,
    PromoteReleaseRequest,
    PromotionOut,
    approval_out,
    diff_out,
    promotion_out,
)
from kiln.api.schemas import MAX_ID, ErrorOut
from kiln.controller.service import Service
from kiln.model.access import Permission
from kiln.spec.grammar import NAME_PATTERN

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "unknown app or release", "model": ErrorOut},
    422: {"description": "environments out of order, or a bad field", "model": ErrorOut},
}


def promotion_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["promotion"])

    @router.post(
        "/promotions",
        summary="Promote a release to the next environment: same digest, the target's "
        "overrides, the target's strategy",
        status_code=status.HTTP_201_CREATED,
        responses={
            200: {"description": "dry run, or the target already runs this release"},
            409: {
                "description": "gate_refused: the failing gates; nothing changed",
                "model": ErrorOut,
            },
            **_ERRORS,
        },
    )
    async def promote(
        body: PromoteReleaseRequest,
        who: Actor,
        response: Response,
        grant: Annotated[Grant, requires(Permission.DEPLOY)],
    ) -> PromotionOut:
        # Access: deploying into the target; reading the source it comes from.
        grant.require(body.target)
        grant.require(body.source, Permission.READ)
        view = await service.promote_release(
            body.app,
            source_environment=body.source,
            target_environment=body.target,
            release=body.release,
            dry_run=body.dry_run,
            message=body.message,
            who=who,
        )
        if not view.changed:
            response.status_code = status.HTTP_200_OK
        return promotion_out(view)

    @router.post(
        "/approvals",
        summary="Approve a release for promotion into an environment that requires approval",
        status_code=status.HTTP_201_CREATED,
        responses=_ERRORS,
    )
    async def approve(
        body: ApproveRequest, who: Actor, grant: Annotated[Grant, requires(Permission.APPROVE)]
    ) -> ApprovalOut:
        # Access: a staging deployer cannot approve what goes into production.
        grant.require(body.environment)
        view = await service.approve(
            body.app,
            target_environment=body.environment,
            release=body.release,
            source_environment=body.source,
            note=body.note,
            who=who,
        )
        return approval_out(view)

    @router.get(
        "/apps/{env}/{app}/diff",
        summary="What differs between two releases of an app: digest, each spec field",
        responses=_ERRORS,
        dependencies=[requires(Permission.READ)],
    )
    async def diff_releases(
        key: Key,
        left: Annotated[int, Query(ge=1, le=MAX_ID, description="release number")],
        right: Annotated[int, Query(ge=1, le=MAX_ID, description="release number")],
    ) -> DiffOut:
        return diff_out(await service.diff_releases(key, left, right))

    @router.get(
        "/diff",
        summary="What differs between what an app runs in two environments",
        responses=_ERRORS,
    )
    async def diff_environments(
        app: Annotated[str, Query(pattern=NAME_PATTERN)],
        left: Annotated[str, Query(pattern=NAME_PATTERN, description="environment")],
        right: Annotated[str, Query(pattern=NAME_PATTERN, description="environment")],
        grant: Annotated[Grant, requires(Permission.READ)],
    ) -> DiffOut:
        grant.require(left)
        grant.require(right)
        return diff_out(await service.diff_environments(app, left, right))

    return router
