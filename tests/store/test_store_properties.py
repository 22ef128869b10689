"""Properties over any sequence of deploys and rollout verdicts."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.model import AppKey, Release, RolloutState
from kiln.store import SqliteStore

from .support import API, PROD_WEB, WEB, at, deploy

KEYS = [WEB, API, PROD_WEB]

_op = st.tuples(st.sampled_from(["deploy", "succeeded", "failed"]), st.sampled_from(KEYS))


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(_op, max_size=25))
def test_any_history_keeps_numbers_contiguous_and_releases_unchanged(
    ops: list[tuple[str, AppKey]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "kiln.db")
        try:
            made: dict[AppKey, list[Release]] = {k: [] for k in KEYS}
            for step, (op, key) in enumerate(ops):
                if op == "deploy":
                    release, rollout = deploy(store, key, version=step + 1, now=at(step))
                    made[key].append(release)
                    assert store.active_rollout(key) == rollout
                else:
                    active = store.active_rollout(key)
                    if active is not None:
                        store.finish_rollout(active.id, RolloutState(op), "verdict", now=at(step))
                        assert store.active_rollout(key) is None
                for k in KEYS:
                    stored = store.list_releases(k)
                    assert [r.number for r in stored] == list(range(1, len(stored) + 1))
                    assert stored == made[k]
                    rollouts = store.list_rollouts(k)
                    assert sum(not r.state.finished for r in rollouts) <= 1
                    app = store.get_app(k)
                    if app is not None and app.stable_release is not None:
                        assert 1 <= app.stable_release <= len(stored)
        finally:
            store.close()
