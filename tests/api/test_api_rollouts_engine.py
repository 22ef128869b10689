"""The rollout endpoints over the real Engine (fake driver, router and health; a real SQLite
store): the wire shapes hold for the views the controller really builds, and the client's
models read them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kiln.api import create_app
from kiln.client import RolloutView
from tests.controller.test_release_groups import CANARY, app_spec, settled
from tests.controller.world import WEB, World, eventually

from .conftest import AUTH, TOKEN, asgi_client

ROLLOUT = "/v1/apps/dev/web/rollout"


@pytest.fixture
async def api(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(world.engine, token=TOKEN), AUTH) as client:
        yield client


async def view(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.get(ROLLOUT)
    assert response.status_code == 200, response.text
    RolloutView.model_validate(response.json())  # what the client makes of it
    return response.json()


async def canary_waiting_for_promote(world: World, api: httpx.AsyncClient) -> None:
    await world.engine.deploy(app_spec(instances=5), message="", who="t")
    await settled(world)
    await world.engine.deploy(app_spec("web:v2", instances=5, deploy=CANARY), message="", who="t")
    await eventually(lambda: (world.router.policies.get(WEB) or None) is not None)

    async def at_second_step() -> bool:
        # The step is stored at once; the status line and groups are the next round's plan.
        body = await view(api)
        return body["rollout"]["to_release"] == 2 and "canary step 2/2" in body["status"]

    deadline = asyncio.get_running_loop().time() + 10
    while not await at_second_step():
        assert asyncio.get_running_loop().time() < deadline, "the canary did not reach step 2"
        await asyncio.sleep(0.02)


async def test_the_engine_view_of_a_canary_goes_over_the_wire(
    world: World, api: httpx.AsyncClient
) -> None:
    await canary_waiting_for_promote(world, api)
    body = await view(api)
    assert body["active"] is True
    assert body["steps"] == [20, 60]
    assert body["rollout"]["strategy"] == "canary"
    assert "canary step 2/2" in body["status"]
    roles = {g["role"]: g for g in body["groups"]}
    assert (roles["stable"]["release"], roles["canary"]["release"]) == (1, 2)
    assert roles["canary"]["share"] == 60


async def test_promote_and_abort_over_the_wire_change_the_engine(
    world: World, api: httpx.AsyncClient
) -> None:
    await canary_waiting_for_promote(world, api)
    paused = await api.post(f"{ROLLOUT}/pause", headers={"X-Kiln-Actor": "ann"})
    assert paused.status_code == 200
    assert paused.json()["rollout"]["paused"] is True
    assert (await api.post(f"{ROLLOUT}/resume")).json()["rollout"]["paused"] is False
    aborted = await api.post(f"{ROLLOUT}/abort")
    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["rollout"]["state"] == "aborted"
    await eventually(lambda: world.store.active_rollout(WEB) is None)
    assert (await view(api))["held_release"] == 2
    assert (await api.post(f"{ROLLOUT}/promote", json={"full": True})).status_code == 409
    retried = await api.post(f"{ROLLOUT}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["rollout"]["kind"] == "retry"
    promoted = await api.post(f"{ROLLOUT}/promote", json={"full": True})
    assert promoted.status_code == 200
    await settled(world)
    done = await view(api)
    assert done["rollout"]["state"] == "succeeded"
    assert done["warm_release"] == 1
    assert done["warm_until"] is not None


async def test_a_canary_without_steps_shows_the_default_steps(
    world: World, api: httpx.AsyncClient
) -> None:
    await world.engine.deploy(app_spec(), message="", who="t")
    await settled(world)
    await world.engine.deploy(app_spec("web:v2", deploy="strategy: canary"), message="", who="t")
    body = await view(api)
    assert (body["active"], body["steps"]) == (True, [10, 50])
