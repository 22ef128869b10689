"""The store's part of release groups: rollout progress, the warm release inside its rollback
window, the failed release held for inspection, switch-back and retry rollouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.errors import Conflict
from kiln.model import RolloutKind, RolloutProgress, RolloutState
from kiln.spec import Strategy
from kiln.store import SqliteStore

from .support import WEB, at, deploy


def test_progress_is_persisted_and_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "kiln.db"
    store = SqliteStore(path)
    _, rollout = deploy(store, WEB, now=at(0))
    progress = RolloutProgress(step=1, step_entered_at=at(5), failing=1, last_verdict="fail: x")
    store.update_rollout(rollout.id, progress, now=at(6))
    store.close()

    reopened = SqliteStore(path)
    active = reopened.active_rollout(WEB)
    assert active is not None
    assert active.progress == progress
    assert active.kind is RolloutKind.DEPLOY
    reopened.close()


def test_a_finished_rollout_takes_no_progress(store: SqliteStore) -> None:
    _, rollout = deploy(store, WEB, now=at(0))
    store.finish_rollout(rollout.id, RolloutState.SUCCEEDED, "ok", now=at(1))
    with pytest.raises(Conflict, match="succeeded"):
        store.update_rollout(rollout.id, RolloutProgress(step=1), now=at(2))


def test_a_promotion_keeps_the_replaced_release_warm_until_the_window_ends(
    store: SqliteStore,
) -> None:
    _, first = deploy(store, WEB, version=1, now=at(0))
    store.finish_rollout(first.id, RolloutState.SUCCEEDED, "ok", now=at(1))
    _, second = deploy(store, WEB, version=2, now=at(2))
    store.finish_rollout(second.id, RolloutState.SUCCEEDED, "ok", now=at(3), warm_until=at(303))

    app = store.get_app(WEB)
    assert app is not None
    assert (app.stable_release, app.warm_release, app.warm_until) == (2, 1, at(303))

    # The next deploy ends the window.
    deploy(store, WEB, version=3, now=at(4))
    app = store.get_app(WEB)
    assert app is not None
    assert (app.warm_release, app.warm_until) == (None, None)


def test_an_aborted_release_is_held_until_the_next_deploy(store: SqliteStore) -> None:
    _, first = deploy(store, WEB, version=1, now=at(0))
    store.finish_rollout(first.id, RolloutState.SUCCEEDED, "ok", now=at(1))
    _, second = deploy(store, WEB, version=2, now=at(2))
    store.finish_rollout(second.id, RolloutState.ABORTED, "aborted by alice", now=at(3), hold=True)

    app = store.get_app(WEB)
    assert app is not None
    assert (app.target_release, app.stable_release, app.held_release) == (1, 1, 2)

    deploy(store, WEB, version=3, now=at(4))
    app = store.get_app(WEB)
    assert app is not None
    assert app.held_release is None


def test_a_switch_back_targets_the_warm_release_without_a_new_release(
    store: SqliteStore,
) -> None:
    _, first = deploy(store, WEB, version=1, now=at(0))
    store.finish_rollout(first.id, RolloutState.SUCCEEDED, "ok", now=at(1))
    _, second = deploy(store, WEB, version=2, now=at(2))
    store.finish_rollout(second.id, RolloutState.SUCCEEDED, "ok", now=at(3), warm_until=at(300))

    back = store.start_rollout(
        WEB,
        to_release=1,
        strategy=Strategy.BLUE_GREEN,
        kind=RolloutKind.SWITCH_BACK,
        deadline_seconds=60,
        now=at(10),
    )
    assert (back.from_release, back.to_release, back.kind) == (2, 1, RolloutKind.SWITCH_BACK)
    assert [r.number for r in store.list_releases(WEB)] == [1, 2]
    store.finish_rollout(
        back.id, RolloutState.SUCCEEDED, "switched", now=at(11), warm_until=at(311)
    )
    app = store.get_app(WEB)
    assert app is not None
    assert (app.target_release, app.stable_release, app.warm_release) == (1, 1, 2)
