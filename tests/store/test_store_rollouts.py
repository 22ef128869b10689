"""Rollouts: opened by every release, superseded, succeeded, failed back to the stable release."""

from __future__ import annotations

import pytest

from kiln.errors import InvalidInput, NotFound
from kiln.model import RolloutState
from kiln.spec import Strategy
from kiln.store import SqliteStore

from .support import API, WEB, at, deploy


def test_a_release_opens_a_rollout_from_the_stable_release_with_a_deadline(
    store: SqliteStore,
) -> None:
    _, first = deploy(store, WEB, version=1, now=at(0), deadline_seconds=90)
    assert (first.from_release, first.to_release, first.state) == (
        None,
        1,
        RolloutState.IN_PROGRESS,
    )
    assert first.strategy is Strategy.ROLLING
    assert (first.started_at, first.deadline_at, first.finished_at) == (at(0), at(90), None)
    assert store.active_rollout(WEB) == first

    store.finish_rollout(first.id, RolloutState.SUCCEEDED, "all ready", now=at(10))
    _, second = deploy(store, WEB, version=2, now=at(20))
    assert (second.from_release, second.to_release) == (1, 2)


def test_a_new_release_supersedes_the_rollout_in_progress(store: SqliteStore) -> None:
    _, first = deploy(store, WEB, version=1, now=at(0))
    _, second = deploy(store, WEB, version=2, now=at(5))
    superseded, current = store.list_rollouts(WEB)
    assert superseded.id == first.id
    assert superseded.state is RolloutState.SUPERSEDED
    assert superseded.finished_at == at(5)
    assert "release 2" in superseded.reason
    assert current == second
    assert store.active_rollout(WEB) == second
    # Nothing succeeded yet, so the new rollout still starts from "no stable release".
    assert second.from_release is None


def test_rollouts_of_other_apps_are_not_superseded(store: SqliteStore) -> None:
    _, web = deploy(store, WEB, version=1)
    deploy(store, API, version=1)
    assert store.active_rollout(WEB) == web


def test_active_rollouts_lists_every_app_in_progress_and_none_that_ended(
    store: SqliteStore,
) -> None:
    _, web = deploy(store, WEB, version=1)
    _, api = deploy(store, API, version=1)
    assert store.active_rollouts() == {WEB: web, API: api}
    store.finish_rollout(web.id, RolloutState.SUCCEEDED, "ok", now=at(1))
    assert store.active_rollouts() == {API: api}


def test_succeeded_rollout_makes_its_release_stable(store: SqliteStore) -> None:
    _, rollout = deploy(store, WEB, version=1)
    done = store.finish_rollout(rollout.id, RolloutState.SUCCEEDED, "2/2 ready", now=at(30))
    assert (done.state, done.finished_at, done.reason) == (
        RolloutState.SUCCEEDED,
        at(30),
        "2/2 ready",
    )
    app = store.get_app(WEB)
    assert app is not None
    assert (app.target_release, app.stable_release, app.updated_at) == (1, 1, at(30))
    assert store.active_rollout(WEB) is None


def test_failed_rollout_sends_the_app_back_to_its_stable_release(store: SqliteStore) -> None:
    _, first = deploy(store, WEB, version=1)
    store.finish_rollout(first.id, RolloutState.SUCCEEDED, "ok", now=at(1))
    _, second = deploy(store, WEB, version=2, now=at(2))
    failed = store.finish_rollout(second.id, RolloutState.FAILED, "deadline passed", now=at(3))
    assert failed.state is RolloutState.FAILED
    app = store.get_app(WEB)
    assert app is not None
    assert (app.target_release, app.stable_release, app.stopped) == (1, 1, False)
    # The failed release stays in the history, unchanged.
    assert [r.number for r in store.list_releases(WEB)] == [1, 2]


def test_failed_first_rollout_stops_the_app_with_no_target(store: SqliteStore) -> None:
    _, rollout = deploy(store, WEB, version=1)
    store.finish_rollout(rollout.id, RolloutState.FAILED, "never became ready", now=at(1))
    app = store.get_app(WEB)
    assert app is not None
    assert (app.target_release, app.stable_release, app.stopped) == (None, None, True)


def test_finishing_a_closed_rollout_returns_it_unchanged(store: SqliteStore) -> None:
    _, rollout = deploy(store, WEB, version=1)
    done = store.finish_rollout(rollout.id, RolloutState.SUCCEEDED, "ok", now=at(1))
    again = store.finish_rollout(rollout.id, RolloutState.FAILED, "late verdict", now=at(2))
    assert again == done
    app = store.get_app(WEB)
    assert app is not None
    assert (app.target_release, app.stable_release, app.stopped) == (1, 1, False)


def test_finishing_a_superseded_rollout_changes_nothing(store: SqliteStore) -> None:
    _, first = deploy(store, WEB, version=1)
    deploy(store, WEB, version=2)
    store.finish_rollout(first.id, RolloutState.FAILED, "stale verdict", now=at(9))
    app = store.get_app(WEB)
    assert app is not None
    assert (app.target_release, app.stopped) == (2, False)


def test_finishing_as_in_progress_is_refused(store: SqliteStore) -> None:
    _, rollout = deploy(store, WEB)
    with pytest.raises(InvalidInput, match="succeeded, failed, aborted or superseded"):
        store.finish_rollout(rollout.id, RolloutState.IN_PROGRESS, "?", now=at(1))


def test_unknown_rollout_is_not_found(store: SqliteStore) -> None:
    with pytest.raises(NotFound, match="no rollout 42"):
        store.finish_rollout(42, RolloutState.SUCCEEDED, "ok", now=at(1))


def test_recreate_strategy_comes_from_the_spec(store: SqliteStore) -> None:
    from kiln.model import ReleaseOrigin
    from kiln.spec import AppSpec, Deploy

    from .support import T0, digest

    spec = AppSpec(app="web", image="demo:1", deploy=Deploy(strategy=Strategy.RECREATE))
    _, rollout = store.create_release(
        WEB,
        spec=spec,
        image="demo:1",
        digest=digest(1),
        spec_hash="h",
        created_by="alice",
        message="",
        origin=ReleaseOrigin.DEPLOY,
        rollback_of=None,
        scale=1,
        deadline_seconds=60,
        now=T0,
    )
    assert rollout.strategy is Strategy.RECREATE
