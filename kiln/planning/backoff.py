"""Crash-loop backoff: when to start the replacement of an instance that exited unplanned.

The first crash after a healthy spell is replaced at once (self-healing must be fast); each
further crash in a row doubles the wait, from 1 s up to ``CAP_SECONDS``. A replacement that
stays ready for ``FORGIVE_AFTER_SECONDS`` clears the history.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from kiln.model import CrashHistory

FIRST_DELAY_SECONDS = 1.0
CAP_SECONDS = 30.0
FORGIVE_AFTER_SECONDS = 10.0


def crash_delay(consecutive: int) -> float:
    """Seconds to wait before the next start after ``consecutive`` crashes in a row."""
    if consecutive <= 1:
        return 0.0
    return float(min(CAP_SECONDS, FIRST_DELAY_SECONDS * 2 ** (consecutive - 2)))


def next_start_at(history: CrashHistory) -> datetime | None:
    """When a replacement may start, or None when it may start now."""
    if history.last_at is None or history.consecutive <= 1:
        return None
    return history.last_at + timedelta(seconds=crash_delay(history.consecutive))


def record_crash(
    history: CrashHistory,
    *,
    at: datetime,
    reason: str,
    release: int,
    started_at: datetime | None = None,
) -> CrashHistory:
    """Count one more crash in a row, unless the instance that crashed had run long enough to
    be trusted: then this crash starts a new count (replaced at once, no backoff)."""
    if started_at is not None and at - started_at >= timedelta(seconds=FORGIVE_AFTER_SECONDS):
        history = CrashHistory()
    return CrashHistory(
        consecutive=history.consecutive + 1, last_at=at, last_reason=reason, last_release=release
    )


def forgive(history: CrashHistory, *, ready_since: datetime | None, now: datetime) -> CrashHistory:
    """Clear the history once an instance started after the last crash stayed ready long enough."""
    if history.consecutive == 0 or ready_since is None or history.last_at is None:
        return history
    if ready_since >= history.last_at and now - ready_since >= timedelta(
        seconds=FORGIVE_AFTER_SECONDS
    ):
        return CrashHistory()
    return history
