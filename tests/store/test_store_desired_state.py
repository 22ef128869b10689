"""``desired_state``: what a round reads of one app, in one transaction."""

from __future__ import annotations

from kiln.model import RolloutState
from kiln.store import SqliteStore
from tests.store.support import WEB, at, deploy


def test_an_unknown_app_has_no_desired_state(store: SqliteStore) -> None:
    assert store.desired_state(WEB) is None


def test_a_first_deploy_wants_its_release_through_its_rollout(store: SqliteStore) -> None:
    release, rollout = deploy(store, WEB, version=1, scale=3)
    state = store.desired_state(WEB)
    assert state is not None
    assert state.app.scale == 3 and state.app.target_release == 1
    assert state.target == release
    assert state.stable is None and state.warm is None and state.held is None
    assert state.rollout == rollout


def test_the_warm_and_the_held_release_come_with_the_app(store: SqliteStore) -> None:
    _, first = deploy(store, WEB, version=1, now=at(0))
    store.finish_rollout(first.id, RolloutState.SUCCEEDED, "ok", now=at(1))
    _, second = deploy(store, WEB, version=2, now=at(2))
    store.finish_rollout(second.id, RolloutState.SUCCEEDED, "ok", now=at(3), warm_until=at(600))
    state = store.desired_state(WEB)
    assert state is not None and state.rollout is None
    assert (state.target and state.target.number, state.stable and state.stable.number) == (2, 2)
    assert state.warm is not None and state.warm.number == 1
    assert state.app.warm_until == at(600)

    _, third = deploy(store, WEB, version=3, now=at(4))
    store.finish_rollout(third.id, RolloutState.FAILED, "bad", now=at(5), hold=True)
    state = store.desired_state(WEB)
    assert state is not None
    assert state.target is not None and state.target.number == 2
    assert state.held is not None and state.held.number == 3
    assert state.warm is None  # a new deploy ended the rollback window
    assert state.target == store.get_release(WEB, 2)
