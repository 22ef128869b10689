"""The event log's live side: every event is appended to the store first, then fanned out to
subscribers (SSE streams, ``kiln events -f``, the deploy progress view)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from kiln.model import AppKey, Event, NewEvent, Severity
from kiln.store.base import Store

log = logging.getLogger("kiln.events")

_QUEUE_LIMIT = 10_000


class EventBus:
    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        self._subscribers: set[asyncio.Queue[Event]] = set()

    def record(
        self,
        key: AppKey | None,
        kind: str,
        reason: str,
        *,
        severity: Severity = Severity.INFO,
        release: int | None = None,
        instance: str | None = None,
    ) -> Event:
        event = self._store.append_event(
            NewEvent(
                key=key,
                kind=kind,
                reason=reason,
                severity=severity,
                release=release,
                instance=instance,
            ),
            now=self._clock(),
        )
        level = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING}.get(
            severity, logging.ERROR
        )
        log.log(level, "%s %s: %s", key or "kiln", kind, reason)
        for queue in list(self._subscribers):
            if queue.qsize() < _QUEUE_LIMIT:
                queue.put_nowait(event)
        return event

    async def follow(self, *, key: AppKey | None, after_id: int) -> AsyncIterator[Event]:
        """Stored events after ``after_id``, then live ones, in id order, without gaps."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            last = after_id
            while True:
                backlog = self._store.list_events(key=key, after_id=last, limit=500)
                for event in backlog:
                    last = event.id
                    yield event
                if len(backlog) < 500:
                    break
            while True:
                event = await queue.get()
                if event.id <= last or (key is not None and event.key != key):
                    continue
                last = event.id
                yield event
        finally:
            self._subscribers.discard(queue)
