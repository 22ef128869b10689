"""What an instance is made of, and the crash backoff arithmetic."""

from __future__ import annotations

import pytest

from kiln.model import LABEL_APP, LABEL_INSTANCE, LABEL_MANAGED, LABEL_RELEASE, CrashHistory
from kiln.planning import (
    container_name,
    crash_delay,
    forgive,
    instance_spec,
    new_instance_id,
    next_start_at,
    record_crash,
)

from .builders import KEY, T0, make_release, seconds


def test_instance_spec_runs_the_release_digest_with_kiln_variables_and_labels() -> None:
    release = make_release(
        7,
        env={"MODE": "fast"},
        command=["serve", "--quiet"],
        resources={"cpus": 0.5, "memory": "64Mi"},
        stop_grace="3s",
    )

    spec = instance_spec(release, "r7-abcdef")

    assert spec.image == release.digest
    assert spec.name == "dev-web-r7-abcdef"
    assert spec.command == ("serve", "--quiet")
    assert spec.env == {
        "MODE": "fast",
        "KILN_APP": "web",
        "KILN_ENVIRONMENT": "dev",
        "KILN_RELEASE": "7",
        "KILN_INSTANCE": "r7-abcdef",
    }
    assert spec.labels[LABEL_MANAGED] == "true"
    assert (spec.labels[LABEL_APP], spec.labels[LABEL_RELEASE]) == ("web", "7")
    assert spec.labels[LABEL_INSTANCE] == "r7-abcdef"
    assert (spec.cpus, spec.memory_bytes, spec.stop_grace) == (0.5, 64 * 1024**2, 3.0)
    assert (spec.read_only, spec.tmpfs) == (True, ("/tmp",))
    assert release.spec.env == {"MODE": "fast"}, "the release's spec was changed"


def test_instance_spec_carries_the_specs_limits_and_user_with_honest_defaults() -> None:
    default = instance_spec(make_release(1), "r1-aaaaaa")
    chosen = instance_spec(
        make_release(2, user="1000:1000", resources={"pids": 64, "cpus": 1, "memory": "256Mi"}),
        "r2-bbbbbb",
    )
    unlimited = instance_spec(
        make_release(3, resources={"pids": None, "cpus": None, "memory": None}), "r3-cccccc"
    )

    assert (default.cpus, default.memory_bytes, default.pids_limit) == (0.5, 128 * 1024**2, 256)
    assert default.user is None  # the image's own user
    assert (chosen.cpus, chosen.memory_bytes, chosen.pids_limit) == (1, 256 * 1024**2, 64)
    assert chosen.user == "1000:1000"
    assert (unlimited.cpus, unlimited.memory_bytes, unlimited.pids_limit) == (None, None, None)


def test_instance_ids_are_deterministic_and_avoid_taken_ones() -> None:
    first = new_instance_id(KEY, 3, now=T0, taken=())
    again = new_instance_id(KEY, 3, now=T0, taken=())
    other = new_instance_id(KEY, 3, now=T0, taken={first})

    assert first == again
    assert other != first
    assert first.startswith("r3-") and len(first) == len("r3-") + 6
    assert container_name(KEY, first) == f"dev-web-{first}"


@pytest.mark.parametrize(
    ("consecutive", "delay"),
    [(0, 0), (1, 0), (2, 1), (3, 2), (4, 4), (5, 8), (6, 16), (7, 30), (50, 30)],
)
def test_crash_delay_doubles_from_one_second_up_to_thirty(consecutive: int, delay: float) -> None:
    assert crash_delay(consecutive) == delay


def test_first_crash_may_be_replaced_now_later_ones_wait() -> None:
    once = record_crash(CrashHistory(), at=T0, reason="exited with code 1", release=2)
    twice = record_crash(once, at=T0 + seconds(1), reason="exited with code 1", release=2)

    assert (once.consecutive, once.last_release) == (1, 2)
    assert next_start_at(once) is None
    assert next_start_at(twice) == T0 + seconds(2)


def test_history_is_forgiven_only_after_ten_seconds_ready_since_the_last_crash() -> None:
    history = CrashHistory(consecutive=4, last_at=T0, last_reason="boom", last_release=1)

    assert forgive(history, ready_since=T0 + seconds(1), now=T0 + seconds(11)) == CrashHistory()
    assert forgive(history, ready_since=T0 + seconds(1), now=T0 + seconds(10)) == history
    # Ready since before the crash: that instance proves nothing about the crashing one.
    assert forgive(history, ready_since=T0 - seconds(60), now=T0 + seconds(60)) == history
    assert forgive(history, ready_since=None, now=T0 + seconds(60)) == history


def test_a_crash_after_a_long_healthy_run_is_not_part_of_a_crash_loop() -> None:
    from datetime import UTC, datetime, timedelta

    from kiln.model import CrashHistory
    from kiln.planning import next_start_at, record_crash

    at = datetime(2026, 1, 1, tzinfo=UTC)
    looping = CrashHistory(
        consecutive=4, last_at=at - timedelta(seconds=30), last_reason="x", last_release=1
    )
    fresh = record_crash(
        looping, at=at, reason="killed", release=1, started_at=at - timedelta(minutes=5)
    )
    assert fresh.consecutive == 1
    assert next_start_at(fresh) is None
    young = record_crash(
        looping, at=at, reason="killed", release=1, started_at=at - timedelta(seconds=2)
    )
    assert young.consecutive == 5
    assert next_start_at(young) is not None
