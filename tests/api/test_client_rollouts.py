"""KilnClient's rollout methods against a real local server over a FakeService."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kiln.client import KilnClient, Rollout, RolloutView
from kiln.controller.views import ReleaseTrafficView
from kiln.errors import Conflict, NotFound
from kiln.model import AppKey

from .conftest import TOKEN
from .fake_service import FakeService
from .test_api_rollouts import CANARY_SPEC, ROLLING_SPEC

WEB = AppKey("dev", "web")
GHOST = AppKey("dev", "ghost")


@pytest.fixture
def kiln(live_url: str) -> Iterator[KilnClient]:
    with KilnClient(base_url=live_url, token=TOKEN, actor="ann@laptop", timeout=10) as client:
        yield client


def rollout_of(view: RolloutView) -> Rollout:
    assert view.rollout is not None
    return view.rollout


def canary_at_first_step(kiln: KilnClient) -> RolloutView:
    kiln.deploy(CANARY_SPEC)
    for _ in range(3):
        kiln.rollout_status(WEB)
    kiln.deploy(CANARY_SPEC.replace("web:1", "web:2"))
    kiln.rollout_status(WEB)
    return kiln.rollout_status(WEB)


def test_rollout_status_comes_back_typed(kiln: KilnClient, service: FakeService) -> None:
    canary_at_first_step(kiln)
    service.traffic[WEB] = [
        ReleaseTrafficView(release=2, requests=50, errors=5, error_rate=0.1, p95_ms=None)
    ]
    view = kiln.rollout_status(WEB)
    assert view.key == WEB
    assert view.active
    rollout = rollout_of(view)
    assert (rollout.strategy, rollout.step, rollout.kind) == ("canary", 0, "deploy")
    assert view.steps == [10, 50]
    assert {g.role: g.share for g in view.groups} == {"stable": 90, "canary": 10}
    assert view.traffic[0].error_rate == 0.1 and view.traffic[0].p95_ms is None


def test_promote_pause_resume_abort_and_retry(kiln: KilnClient, service: FakeService) -> None:
    canary_at_first_step(kiln)
    assert rollout_of(kiln.promote(WEB)).promote_requested
    assert rollout_of(kiln.rollout_status(WEB)).step == 1
    assert rollout_of(kiln.pause(WEB)).paused
    assert not rollout_of(kiln.resume(WEB)).paused
    aborted = kiln.abort(WEB)
    assert rollout_of(aborted).state == "aborted"
    assert aborted.held_release == 2
    retried = rollout_of(kiln.retry(WEB))
    assert (retried.kind, retried.step) == ("retry", 0)
    assert rollout_of(kiln.promote(WEB, full=True)).promote_requested
    assert [verb for verb, _ in service.calls if verb != "deploy"] == [
        "promote",
        "pause",
        "resume",
        "abort",
        "retry",
        "promote",
    ]


def test_rollout_errors_come_back_as_their_kiln_error_class(kiln: KilnClient) -> None:
    with pytest.raises(NotFound):
        kiln.rollout_status(GHOST)
    with pytest.raises(NotFound):
        kiln.abort(GHOST)
    kiln.deploy(ROLLING_SPEC)
    with pytest.raises(Conflict, match="moves on by itself"):
        kiln.promote(WEB)
    with pytest.raises(Conflict, match="in progress"):
        kiln.retry(WEB)
