"""Outgoing webhooks: events of chosen types POSTed as JSON to receivers named in the settings
file (``events.webhooks``), signed, retried with backoff, at least once across restarts.

    EventBus ──listener──▶ one bounded queue per receiver ──▶ its sender task ──POST──▶ receiver
    (events are stored     (full: the sender reads the          attempt 1, 2, ... max_attempts,
     with ids first)        rest from the store instead)        0.5 s doubling to 30 s between
                                                                 │
                                 store: webhook_cursors(url) ◀───┘ the event's id, once it was
                                                                   delivered or given up on

Delivery is at least once. Each receiver has a cursor in the store: the id of the last event
it took or was given up on. On start, its sender first sends the stored events after the cursor
(those kiln recorded but had not sent when it stopped or crashed), in id order, then the live
ones; an event is sent again only when kiln died between the POST and moving the cursor
(receivers drop duplicates by ``X-Kiln-Delivery``). That backlog is bounded: at most the newest
``RESUME_COUNT`` events after the cursor, none older than ``RESUME_WINDOW``; what is left out is
named in one ``webhook.failed`` event. A receiver configured for the first time starts at the
events of this run. A queue that fills up (a slow receiver) loses nothing: the sender reads
what did not fit from the store, under the same bound.

Each request: body = the event as the API shows it (``EventOut``'s fields), headers
``X-Kiln-Event: KIND``, ``X-Kiln-Delivery: EVENT_ID`` (the same on every retry, so a receiver
can drop duplicates) and, with a secret, ``X-Kiln-Signature: sha256=HEX`` where HEX is the
HMAC-SHA256 of the exact body bytes. A 2xx answer is delivered; anything else (or no answer)
is retried. A receiver that never takes an event costs one ``webhook.failed`` event (never
itself sent to webhooks, so a dead receiver cannot make a loop).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from kiln.background import stop_tasks
from kiln.config.file import WebhookSettings
from kiln.errors import InvalidInput, KilnError
from kiln.model import Event, EventKind, Severity, kinds_matching
from kiln.store.aio import AsyncStore

log = logging.getLogger("kiln.webhooks")

QUEUE_LIMIT = 1000
FIRST_DELAY = 0.5
MAX_DELAY = 30.0
RESUME_COUNT = 1000
"""On start (or after a full queue), at most the newest this many events after a cursor."""
RESUME_WINDOW = timedelta(hours=24)
"""... and none older than this: a receiver down for a day gets today's news, not a flood."""
_PAGE = 500
SAVE_EVERY = 50
"""A cursor is saved after a burst, or after this many ids of a long one."""


def signature(secret: bytes, body: bytes) -> str:
    """The value of ``X-Kiln-Signature`` for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def event_payload(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "environment": event.key.environment if event.key else None,
        "app": event.key.app if event.key else None,
        "kind": event.kind.value,
        "category": event.kind.category,
        "reason": event.reason,
        "severity": event.severity.value,
        "release": event.release,
        "instance": event.instance,
    }


@dataclass(frozen=True)
class Receiver:
    url: str
    kinds: frozenset[EventKind] | None  # None: every kind
    secret: bytes | None
    max_attempts: int
    timeout: float

    @classmethod
    def from_settings(cls, settings: WebhookSettings) -> Receiver:
        try:
            kinds = kinds_matching(settings.types) if settings.types else None
        except ValueError as exc:
            raise InvalidInput(f"events.webhooks ({settings.url}): types: {exc}") from exc
        secret = None
        if settings.secret_file is not None:
            try:
                secret = settings.secret_file.read_bytes().strip()
            except OSError as exc:
                raise InvalidInput(
                    f"events.webhooks ({settings.url}): secret_file {settings.secret_file} "
                    f"cannot be read: {exc.strerror}"
                ) from exc
        return cls(settings.url, kinds, secret, settings.max_attempts, settings.timeout)

    def wants(self, event: Event) -> bool:
        if event.kind is EventKind.WEBHOOK_FAILED:
            return False
        return self.kinds is None or event.kind in self.kinds


@dataclass
class _Lane:
    """One receiver's queue and where its delivery stands."""

    receiver: Receiver
    cursor: str  # its key in the store: the URL (``URL#2`` for a second entry of one URL)
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    first_seen: int | None = None  # the first event id the listener passed it in this run
    behind: bool = False  # the queue was full: what did not fit is read from the store
    last: int = 0  # the last event id delivered or given up on
    saved: int = -1  # the cursor as the store has it


class Webhooks:
    """Call ``listener`` from the event bus; ``start`` the senders; ``close`` stops them.
    Events not sent by then are sent by the next kiln on this store (see the module)."""

    def __init__(
        self,
        receivers: list[Receiver],
        *,
        store: AsyncStore,
        clock: Callable[[], datetime],
        on_failure: Any = None,
        on_skipped: Any = None,
        transport: httpx.AsyncBaseTransport | None = None,
        first_delay: float = FIRST_DELAY,
    ) -> None:
        self._receivers = receivers
        seen: dict[str, int] = {}
        self._lanes: list[_Lane] = []
        for receiver in receivers:
            seen[receiver.url] = seen.get(receiver.url, 0) + 1
            n = seen[receiver.url]
            self._lanes.append(_Lane(receiver, receiver.url if n == 1 else f"{receiver.url}#{n}"))
        self._store = store
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._transport = transport
        self._first_delay = first_delay
        self._on_failure = on_failure  # (url, event, error) -> None
        self._on_skipped = on_skipped  # (url, why) -> None
        self.delivered = 0
        self.failed = 0
        self.deferred = 0  # events that did not fit a queue and were read from the store
        self.skipped = 0  # events left out of a backlog by RESUME_COUNT / RESUME_WINDOW

    def listener(self, event: Event) -> None:
        for lane in self._lanes:
            if not lane.receiver.wants(event):
                continue
            if lane.first_seen is None:
                lane.first_seen = event.id
            if lane.behind:
                self.deferred += 1  # the store read that catches up includes it
                continue
            try:
                lane.queue.put_nowait(event)
            except asyncio.QueueFull:
                lane.behind = True
                self.deferred += 1

    def start(self) -> None:
        if self._tasks or not self._lanes:
            return
        client = httpx.AsyncClient(transport=self._transport, follow_redirects=False)
        self._client = client
        for lane in self._lanes:
            self._tasks.append(
                asyncio.create_task(self._send_forever(client, lane), name=f"webhook {lane.cursor}")
            )

    async def close(self) -> None:
        await stop_tasks(*self._tasks)
        if self._tasks:
            # What was sent since the last save, so a restart does not send it again.
            for lane in self._lanes:
                if lane.last > lane.saved:
                    await self._save(lane)
        self._tasks.clear()
        if hasattr(self, "_client"):
            await self._client.aclose()

    async def _send_forever(self, client: httpx.AsyncClient, lane: _Lane) -> None:
        await self._resume(lane)
        await self._catch_up(client, lane)
        while True:
            if lane.behind:
                # Cleared before the store is read: whatever overflows from now on is either
                # in that read or sets the flag again.
                lane.behind = False
                await self._catch_up(client, lane)
                continue
            event = await lane.queue.get()
            if event.id > lane.last:  # else already sent from the store
                await self._send(client, lane, event)

    async def _resume(self, lane: _Lane) -> None:
        """Where the lane starts: its stored cursor; without one (a receiver new to this
        store), just before the first event of this run."""
        try:
            stored = await self._store.webhook_cursor(lane.cursor)
            if stored is not None:
                lane.last = lane.saved = stored
                return
            newest = await self._newest_id()
        except KilnError as exc:
            log.warning("webhook %s: cursor unreadable, sending live events: %s", lane.cursor, exc)
            lane.last = lane.first_seen - 1 if lane.first_seen is not None else 0
            return
        # The listener may have passed events the newest id already counts: start before them.
        lane.last = newest if lane.first_seen is None else min(newest, lane.first_seen - 1)
        await self._save(lane)

    async def _newest_id(self) -> int:
        newest = await self._store.list_events(limit=1)
        return newest[0].id if newest else 0

    async def _catch_up(self, client: httpx.AsyncClient, lane: _Lane) -> None:
        """Send the stored events after the cursor, in id order, within the bound."""
        try:
            newest = await self._newest_id()
        except KilnError as exc:
            log.warning("webhook %s: events unreadable, sending live ones: %s", lane.cursor, exc)
            return
        after = lane.last
        beyond = max(0, newest - RESUME_COUNT - after)  # ids are gap-free but for rollbacks
        after += beyond
        oldest = self._clock() - RESUME_WINDOW
        too_old = 0
        kinds = lane.receiver.kinds
        while True:
            # after_id 0 means "the newest `limit`" to the store: then ask for the whole bound.
            limit = _PAGE if after > 0 else RESUME_COUNT
            try:
                page = await self._store.list_events(after_id=after, limit=limit, kinds=kinds)
            except KilnError as exc:
                log.warning("webhook %s: events unreadable: %s", lane.cursor, exc)
                await asyncio.sleep(self._first_delay)  # a broken store is not asked in a spin
                lane.behind = True  # try again before the next live event
                return
            for event in page:
                after = event.id
                if event.id <= lane.last or not lane.receiver.wants(event):
                    continue
                if event.at < oldest:
                    too_old += 1
                    lane.last = event.id
                    continue
                await self._send(client, lane, event)
            if len(page) < limit:
                break
        if beyond or too_old:
            self._skipped(lane, beyond, too_old)
        lane.last = max(lane.last, after)
        if lane.last > lane.saved:
            await self._save(lane)

    def _skipped(self, lane: _Lane, beyond: int, too_old: int) -> None:
        parts = []
        if beyond:
            parts.append(f"about {beyond} events before the newest {RESUME_COUNT}")
        if too_old:
            parts.append(f"{too_old} events older than {RESUME_WINDOW}")
        why = " and ".join(parts) + " were not sent (kiln was stopped or the receiver was behind)"
        self.skipped += beyond + too_old
        log.warning("webhook %s: %s", lane.receiver.url, why)
        if self._on_skipped is not None:
            self._on_skipped(lane.receiver.url, why)

    async def _send(self, client: httpx.AsyncClient, lane: _Lane, event: Event) -> None:
        error = await self._deliver(client, lane.receiver, event)
        if error is None:
            self.delivered += 1
        else:
            self.failed += 1
            log.warning("webhook %s gave up on event %d: %s", lane.receiver.url, event.id, error)
            if self._on_failure is not None:
                self._on_failure(lane.receiver.url, event, error)
        lane.last = event.id
        # One store write per burst, not per event: saved when the queue is empty, and every
        # SAVE_EVERY events of a long one (a crash resends at most those).
        if lane.queue.empty() or lane.last - lane.saved >= SAVE_EVERY:
            await self._save(lane)

    async def _save(self, lane: _Lane) -> None:
        try:
            await self._store.set_webhook_cursor(lane.cursor, lane.last, now=self._clock())
            lane.saved = lane.last
        except KilnError as exc:
            # Not fatal: the cursor stays behind, so a restart sends these events again.
            log.warning("webhook %s: cursor not saved: %s", lane.cursor, exc)

    async def _deliver(
        self, client: httpx.AsyncClient, receiver: Receiver, event: Event
    ) -> str | None:
        body = json.dumps(event_payload(event), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "kiln-webhooks",
            "X-Kiln-Event": event.kind.value,
            "X-Kiln-Delivery": str(event.id),
        }
        if receiver.secret is not None:
            headers["X-Kiln-Signature"] = signature(receiver.secret, body)
        delay = self._first_delay
        error = ""
        for attempt in range(1, receiver.max_attempts + 1):
            try:
                response = await client.post(
                    receiver.url, content=body, headers=headers, timeout=receiver.timeout
                )
                if 200 <= response.status_code < 300:
                    return None
                error = f"HTTP {response.status_code} on attempt {attempt}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__} on attempt {attempt}: {exc}"
            if attempt < receiver.max_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY)
        return error


def failure_reason(url: str, event: Event, error: str) -> tuple[EventKind, str, Severity]:
    return (
        EventKind.WEBHOOK_FAILED,
        f"webhook {url} did not take event {event.id} ({event.kind.value}): {error}",
        Severity.WARNING,
    )


def skipped_reason(url: str, why: str) -> tuple[EventKind, str, Severity]:
    return EventKind.WEBHOOK_FAILED, f"webhook {url}: {why}", Severity.WARNING
