"""Outgoing webhooks: events of chosen types POSTed as JSON to receivers named in the settings
file (``events.webhooks``), signed, retried with backoff.

    EventBus ──listener──▶ one bounded queue per receiver ──▶ its sender task ──POST──▶ receiver
                           (full: the event is dropped        attempt 1, 2, ... max_attempts,
                            and counted, never blocks)         0.5 s doubling to 30 s between

Each request: body = the event as the API shows it (``EventOut``'s fields), headers
``X-Kiln-Event: KIND``, ``X-Kiln-Delivery: EVENT_ID`` (the same on every retry, so a receiver
can drop duplicates) and, with a secret, ``X-Kiln-Signature: sha256=HEX`` where HEX is the
HMAC-SHA256 of the exact body bytes. A 2xx answer is delivered; anything else (or no answer)
is retried. A receiver that never takes an event costs one ``webhook.failed`` event (never
itself sent to webhooks, so a dead receiver cannot make a loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from kiln.config.file import WebhookSettings
from kiln.errors import InvalidInput
from kiln.model import Event, EventKind, Severity, kinds_matching

log = logging.getLogger("kiln.webhooks")

QUEUE_LIMIT = 1000
FIRST_DELAY = 0.5
MAX_DELAY = 30.0


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


class Webhooks:
    """Call ``listener`` from the event bus; ``start`` the senders; ``close`` stops them
    (events still queued are dropped: webhooks are best effort across a restart)."""

    def __init__(
        self,
        receivers: list[Receiver],
        *,
        on_failure: Any = None,
        transport: httpx.AsyncBaseTransport | None = None,
        first_delay: float = FIRST_DELAY,
    ) -> None:
        self._receivers = receivers
        self._queues: list[asyncio.Queue[Event]] = [
            asyncio.Queue(maxsize=QUEUE_LIMIT) for _ in receivers
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._transport = transport
        self._first_delay = first_delay
        self._on_failure = on_failure  # (url, event, error) -> None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def listener(self, event: Event) -> None:
        for receiver, queue in zip(self._receivers, self._queues, strict=True):
            if receiver.wants(event):
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:
                    self.dropped += 1

    def start(self) -> None:
        if self._tasks or not self._receivers:
            return
        client = httpx.AsyncClient(transport=self._transport, follow_redirects=False)
        self._client = client
        for receiver, queue in zip(self._receivers, self._queues, strict=True):
            self._tasks.append(asyncio.create_task(self._send_forever(client, receiver, queue)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if hasattr(self, "_client"):
            await self._client.aclose()

    async def _send_forever(
        self, client: httpx.AsyncClient, receiver: Receiver, queue: asyncio.Queue[Event]
    ) -> None:
        while True:
            event = await queue.get()
            error = await self._deliver(client, receiver, event)
            if error is None:
                self.delivered += 1
                continue
            self.failed += 1
            log.warning("webhook %s gave up on event %d: %s", receiver.url, event.id, error)
            if self._on_failure is not None:
                self._on_failure(receiver.url, event, error)

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
