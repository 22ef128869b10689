"""Event kinds are one enum: filters by category or kind, clear errors for unknown names."""

from __future__ import annotations

import pytest

from kiln.model import EventKind, event_categories, kinds_matching


def test_every_kind_is_dotted_category_and_name() -> None:
    for kind in EventKind:
        if kind is EventKind.UNKNOWN:
            continue
        category, _, name = kind.value.partition(".")
        assert category and name, kind
        assert kind.category == category


def test_a_category_selects_all_its_kinds_and_a_kind_only_itself() -> None:
    rollout = kinds_matching(["rollout"])
    assert EventKind.ROLLOUT_FAILED in rollout and EventKind.ROLLOUT_VERDICT in rollout
    assert EventKind.INSTANCE_EXITED not in rollout
    assert kinds_matching(["rollout.failed", "drift"]) == {
        EventKind.ROLLOUT_FAILED,
        EventKind.DRIFT_DETECTED,
        EventKind.DRIFT_CORRECTED,
    }


def test_an_unknown_type_names_what_exists() -> None:
    with pytest.raises(ValueError, match="rollout"):
        kinds_matching(["rollouts"])
    with pytest.raises(ValueError, match="not an event kind"):
        kinds_matching(["rollout.exploded"])


def test_the_categories_the_issue_asks_for_exist() -> None:
    assert {"release", "rollout", "instance", "drift", "auth", "router"} <= set(event_categories())
