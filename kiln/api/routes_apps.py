"""Routes that read and change apps: status, deploy, rollback, scale, stop, destroy, releases."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from starlette.concurrency import run_in_threadpool

from kiln.api.access import Grant, requires
from kiln.api.deps import Actor, Key
from kiln.api.schemas import (
    AppStatusOut,
    DeployRequest,
    DeployResultOut,
    ReleaseOut,
    RollbackRequest,
    ScaleRequest,
    app_status_out,
    deploy_result_out,
    release_view_out,
)
from kiln.controller.service import Service
from kiln.errors import InvalidInput
from kiln.model.access import Permission
from kiln.spec import AppSpec, parse_spec

_READ = [requires(Permission.READ)]
_DEPLOY = [requires(Permission.DEPLOY)]


async def check_spec(text: str) -> AppSpec:
    """Parse ``text`` in a worker thread; ``SpecInvalid`` with every problem if it is bad.

    Parsing a large or hostile kiln.yaml takes real CPU time: done here, off the event loop,
    it cannot stall every other request and stream, and a bad spec never reaches the engine.
    """
    try:
        return await run_in_threadpool(parse_spec, text)
    except RecursionError as exc:
        raise InvalidInput("the spec is nested too deeply to parse") from exc


def apps_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["apps"])

    @router.get("/apps", summary="Status of every app (that the token may see)")
    async def list_apps(grant: Annotated[Grant, requires(Permission.READ)]) -> list[AppStatusOut]:
        statuses = await service.list_status()
        return [app_status_out(s) for s in statuses if grant.sees(s.key.environment)]

    @router.get(
        "/apps/{env}/{app}",
        summary="Status of one app: instances and active rollout",
        dependencies=_READ,
    )
    async def get_app(key: Key) -> AppStatusOut:
        return app_status_out(await service.status(key))

    @router.post(
        "/deploy",
        summary="Deploy a kiln.yaml: a new release and its rollout (201), or unchanged (200)",
        status_code=status.HTTP_201_CREATED,
        responses={200: {"description": "same image and spec as the target: only the scale"}},
    )
    async def deploy(
        body: DeployRequest,
        who: Actor,
        response: Response,
        grant: Annotated[Grant, requires(Permission.DEPLOY)],
    ) -> DeployResultOut:
        # The environment is in the spec, not the path: checked once the spec is read.
        grant.require((await check_spec(body.spec)).environment)
        try:
            result = await service.deploy(
                body.spec, message=body.message, who=who, environment=body.environment
            )
        except RecursionError as exc:  # the loop's deeper stack; the thread's parse passed
            raise InvalidInput("the spec is nested too deeply to parse") from exc
        if not result.changed:
            response.status_code = status.HTTP_200_OK
        return deploy_result_out(result)

    @router.post(
        "/apps/{env}/{app}/rollback",
        summary="Roll back: a new release reusing an earlier release's image and spec",
        status_code=status.HTTP_201_CREATED,
        dependencies=_DEPLOY,
    )
    async def rollback(
        key: Key, body: RollbackRequest, who: Actor, response: Response
    ) -> DeployResultOut:
        result = await service.rollback(key, to=body.to, message=body.message, who=who)
        if not result.changed:
            response.status_code = status.HTTP_200_OK
        return deploy_result_out(result)

    @router.post(
        "/apps/{env}/{app}/scale", summary="Set the number of instances", dependencies=_DEPLOY
    )
    async def scale(key: Key, body: ScaleRequest, who: Actor) -> AppStatusOut:
        return app_status_out(await service.scale(key, body.instances, who=who))

    @router.post(
        "/apps/{env}/{app}/stop",
        summary="Stop every instance, keep the history",
        dependencies=_DEPLOY,
    )
    async def stop(key: Key, who: Actor) -> AppStatusOut:
        return app_status_out(await service.stop(key, who=who))

    @router.delete(
        "/apps/{env}/{app}",
        summary="Destroy the app: forget it and drop its routes now; its instances are stopped "
        "and removed in the background",
        status_code=status.HTTP_204_NO_CONTENT,
        dependencies=_DEPLOY,
    )
    async def destroy(
        key: Key,
        who: Actor,
        wait: Annotated[
            bool,
            Query(
                description="answer only once every instance is gone too (up to a minute; "
                "503 after that, and kiln keeps removing them)"
            ),
        ] = False,
    ) -> Response:
        await service.destroy(key, who=who, wait=wait)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.get(
        "/apps/{env}/{app}/releases",
        summary="Releases of one app, oldest first",
        dependencies=_READ,
    )
    async def releases(key: Key) -> list[ReleaseOut]:
        return [release_view_out(r) for r in await service.releases(key)]

    return router
