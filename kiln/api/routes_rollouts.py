"""Routes that show and steer an app's rollout.

    GET  /v1/apps/{env}/{app}/rollout           where the rollout is: step, groups, traffic
    POST /v1/apps/{env}/{app}/rollout/promote   {"full": false}: canary next step / all traffic
    POST /v1/apps/{env}/{app}/rollout/pause     hold the traffic where it is
    POST /v1/apps/{env}/{app}/rollout/resume    go on
    POST /v1/apps/{env}/{app}/rollout/abort     traffic back to the stable release at once
    POST /v1/apps/{env}/{app}/rollout/retry     a failed or aborted rollout from its first step

Each write changes desired state and wakes the app's loop, then answers the rollout view as it
is right after the change; the next round moves traffic. Every answer is a ``RolloutViewOut``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from kiln.api.access import requires
from kiln.api.deps import Actor, Key
from kiln.api.schemas import ErrorOut, PromoteRequest, RolloutViewOut, rollout_view_out
from kiln.controller.service import Service
from kiln.model.access import Permission


def _errors(conflict: str) -> dict[int | str, dict[str, Any]]:
    return {
        404: {"description": "unknown app", "model": ErrorOut},
        409: {"description": conflict, "model": ErrorOut},
    }


_STEERABLE_ONLY = (
    "no rollout in progress, or a rolling or recreate rollout (it moves on by itself; only "
    "canary and blue-green rollouts can be steered)"
)


def rollouts_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/v1/apps/{env}/{app}/rollout", tags=["rollouts"])
    steer = [requires(Permission.DEPLOY)]

    @router.get(
        "",
        dependencies=[requires(Permission.READ)],
        summary="The rollout in progress (or the last one): step, groups, traffic, verdicts",
        responses={404: {"description": "unknown app", "model": ErrorOut}},
    )
    async def rollout_status(key: Key) -> RolloutViewOut:
        return rollout_view_out(await service.rollout_status(key))

    @router.post(
        "/promote",
        summary="Canary: the next step (full: all traffic now); blue-green: switch all traffic",
        responses=_errors(_STEERABLE_ONLY),
        dependencies=steer,
    )
    async def promote(
        key: Key,
        who: Actor,
        body: Annotated[PromoteRequest | None, Body()] = None,
    ) -> RolloutViewOut:
        full = body.full if body is not None else False
        return rollout_view_out(await service.promote(key, full=full, who=who))

    @router.post(
        "/pause",
        summary="Hold a canary or blue-green rollout where it is; traffic stays as it is",
        responses=_errors(_STEERABLE_ONLY),
        dependencies=steer,
    )
    async def pause(key: Key, who: Actor) -> RolloutViewOut:
        return rollout_view_out(await service.pause(key, who=who))

    @router.post(
        "/resume",
        summary="Let a paused rollout go on",
        responses=_errors(_STEERABLE_ONLY),
        dependencies=steer,
    )
    async def resume(key: Key, who: Actor) -> RolloutViewOut:
        return rollout_view_out(await service.resume(key, who=who))

    @router.post(
        "/abort",
        summary="Traffic back to the stable release at once; the new release is kept for "
        "inspection until the next deploy",
        responses=_errors("no rollout in progress"),
        dependencies=steer,
    )
    async def abort(key: Key, who: Actor) -> RolloutViewOut:
        return rollout_view_out(await service.abort(key, who=who))

    @router.post(
        "/retry",
        summary="Start a failed or aborted rollout again from its first step",
        responses=_errors("a rollout is in progress, or the last one did not fail or get aborted"),
        dependencies=steer,
    )
    async def retry(key: Key, who: Actor) -> RolloutViewOut:
        return rollout_view_out(await service.retry(key, who=who))

    return router
