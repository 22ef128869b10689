"""The event log's live side.

``record`` never blocks the event loop: it logs the event and puts it on a queue. One writer
task drains the queue in batches, appends each batch to the store in one transaction on the
store's thread (``AsyncStore.append_events``), then fans the stored events out, in id order,
to subscribers (SSE streams, ``kiln events -f``, the deploy progress view) and to listeners
(metrics counters, outgoing webhooks), which must not block: they are called in line.

    record ─▶ queue ─▶ writer task ─▶ store.append_events(batch) ─▶ subscribers, listeners
                                        (store thread, one tx)      (in id order)

A command that tells a user something happened awaits ``flush()`` before it answers, so
nothing acknowledged is lost if kiln dies a moment later; ``close()`` flushes the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection
from datetime import datetime

from kiln.errors import KilnError, PermanentFailure
from kiln.model import AppKey, Event, EventKind, NewEvent, Severity
from kiln.store.aio import AsyncStore

log = logging.getLogger("kiln.events")

_QUEUE_LIMIT = 10_000
# Events per store transaction: a burst (a round starting many instances) is one commit.
_BATCH = 500
# A failed append is retried this often (with a growing pause) before its events are dropped
# and ``flush`` raises: a store that stays broken must not hold every command forever.
_ATTEMPTS = 5
_RETRY_PAUSE = 0.05


class EventBus:
    def __init__(self, store: AsyncStore, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._listeners: list[Callable[[Event], None]] = []
        self._pending: list[NewEvent] = []
        self._recorded = 0  # events ever recorded
        self._settled = 0  # of those, written (or given up on)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the writer runs on
        # The last batch given up on: (first, last) event count and why, for ``flush``.
        self._failed: tuple[int, int, KilnError] | None = None

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` with every event written from now on (in line: keep it quick)."""
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
    ) -> None:
        """Queue the event; the writer task stores it and then tells subscribers. Await
        ``flush()`` before acknowledging it to anyone."""
        event = NewEvent(
            key=key,
            kind=kind,
            reason=reason,
            severity=severity,
            release=release,
            instance=instance,
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
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another thread (a driver's or a library's callback)
            if self._loop is None:
                raise
            self._loop.call_soon_threadsafe(self._enqueue, event, self._loop)
            return
        self._enqueue(event, loop)

    def _enqueue(self, event: NewEvent, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending.append(event)
        self._recorded += 1
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_pending(), name="event writer")

    async def flush(self) -> None:
        """Return once every event recorded before this call is in the store; raises the
        store's error when the last of them could not be written."""
        upto = self._recorded
        if self._settled < upto:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((upto, waiter))
            await waiter
        elif self._failed is not None and self._failed[0] < upto <= self._failed[1]:
            raise self._failed[2]

    async def close(self) -> None:
        """Write what is queued (the engine closes the store right after)."""
        with contextlib.suppress(KilnError):
            await self.flush()
        if self._writer is not None and not self._writer.done():
            await self._writer

    async def _write_pending(self) -> None:
        while self._pending:
            batch = self._pending[:_BATCH]
            first = self._settled
            failure: KilnError | None = None
            try:
                stored = await self._append(batch)
            except Exception as exc:  # the writer must outlive any failure, or flush hangs
                failure = (
                    exc
                    if isinstance(exc, KilnError)
                    else PermanentFailure(f"could not write {len(batch)} events: {exc!r}")
                )
                if not isinstance(exc, KilnError):
                    log.error("could not write %d events: %r", len(batch), exc)
                stored = []
                self._failed = (first, first + len(batch), failure)
            del self._pending[: len(batch)]
            self._settled += len(batch)
            for event in stored:
                self._fan_out(event)
            self._wake_waiters(failure)

    async def _append(self, batch: list[NewEvent]) -> list[Event]:
        pause = _RETRY_PAUSE
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return await self._store.append_events(batch, now=self._clock())
            except KilnError as exc:
                if attempt == _ATTEMPTS:
                    log.error(
                        "could not write %d events to the store, dropping them: %s",
                        len(batch),
                        exc.message,
                    )
                    raise
                log.warning("writing %d events failed (retrying): %s", len(batch), exc.message)
                await asyncio.sleep(pause)
                pause *= 2
        raise AssertionError("unreachable")

    def _wake_waiters(self, failure: KilnError | None) -> None:
        """Waiters whose last event is now settled go; those whose last event was in a batch
        given up on get its error."""
        still: list[tuple[int, asyncio.Future[None]]] = []
        for upto, waiter in self._waiters:
            if upto <= self._settled:
                if waiter.done():
                    continue
                if failure is not None and self._failed is not None and self._failed[0] < upto:
                    waiter.set_exception(failure)
                else:
                    waiter.set_result(None)
            else:
                still.append((upto, waiter))
        self._waiters = still

    def _fan_out(self, event: Event) -> None:
        for queue in list(self._subscribers):
            if queue.qsize() < _QUEUE_LIMIT:
                queue.put_nowait(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not fail the state change it reports
                log.exception("event listener %r failed on event %d", listener, event.id)

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
                backlog = await self._store.list_events(key=key, after_id=last, limit=500)
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
