"""The event log's live side: every event is appended to the store first, then fanned out to
subscribers (SSE streams, ``kiln events -f``, the deploy progress view) and to listeners
(metrics counters, outgoing webhooks), which must not block: they are called in line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection
from datetime import datetime

from kiln.model import AppKey, Event, EventKind, NewEvent, Severity
from kiln.store.base import Store

log = logging.getLogger("kiln.events")

_QUEUE_LIMIT = 10_000


class EventBus:
    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._listeners: list[Callable[[Event], None]] = []

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` with every event recorded from now on (in line: keep it quick)."""
        self._listeners.append(listener)

    def record(
        self,
        key: AppKey | None,
        kind: EventKind,
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
        log.log(
            level,
            "%s %s%s: %s",
            key or "kiln",
            kind,
            f" (release {release})" if release is not None else "",
            reason,
            extra={
                "env": key.environment if key else None,
                "app": key.app if key else None,
                "release": release,
                "instance": instance,
                "kind": kind.value,
            },
        )
        for queue in list(self._subscribers):
            if queue.qsize() < _QUEUE_LIMIT:
                queue.put_nowait(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not fail the state change it reports
                log.exception("event listener %r failed on event %d", listener, event.id)
        return event

    async def follow(
        self, *, key: AppKey | None, after_id: int, kinds: Collection[EventKind] | None = None
    ) -> AsyncIterator[Event]:
        """Stored events after ``after_id``, then live ones, in id order, without gaps;
        only those of ``kinds`` when given."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            last = after_id
            while True:
                backlog = self._store.list_events(key=key, after_id=last, limit=500)
                for event in backlog:
                    last = event.id
                    if kinds is None or event.kind in kinds:
                        yield event
                if len(backlog) < 500:
                    break
            while True:
                event = await queue.get()
                if event.id <= last or (key is not None and event.key != key):
                    continue
                if kinds is not None and event.kind not in kinds:
                    last = event.id
                    continue
                last = event.id
                yield event
        finally:
            self._subscribers.discard(queue)
