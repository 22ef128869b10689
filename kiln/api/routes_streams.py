"""Routes that read the event log and instance logs, as pages or as streams.

    GET /v1/events                 a page of events (JSON array)
    GET /v1/events/stream          Server-Sent Events: ``id:`` event id (no ``event:`` name),
                                   ``data:`` JSON event; FastAPI adds a ``: ping`` comment after
                                   15 s of silence
    GET /v1/event-kinds            every event kind and category (for filters and pickers)
    GET /v1/apps/{env}/{app}/logs  NDJSON, one LogLine per line

Both event routes take ``type=`` (repeatable, or comma-separated): a category (``rollout``) or
a kind (``rollout.failed``); an unknown one is a 422 that lists what exists.

A stream has already sent "200 OK" when an error happens inside it, so errors there travel in
the stream itself, in the same shape as every other error: an SSE ``event: error`` whose
``data`` is the JSON error, or an NDJSON line ``{"error": {...}}``. The client turns both back
into exceptions. Errors found before the stream starts (token, parameters, unknown app) are
ordinary JSON answers with their status.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel

from kiln.api.access import Grant, requires
from kiln.api.deps import Key, OptionalKey
from kiln.api.errors import clip, error_body
from kiln.api.schemas import MAX_ID, EventOut, LogLineOut, event_out, log_line_out
from kiln.controller.service import Service
from kiln.controller.views import LogRequest
from kiln.errors import InvalidInput, KilnError
from kiln.model import Event, EventKind, event_categories, kinds_matching
from kiln.model.access import Permission
from kiln.spec.units import parse_duration

log = logging.getLogger("kiln.api")

NDJSON = "application/x-ndjson"


def _error_body(exc: Exception) -> dict[str, Any]:
    if not isinstance(exc, KilnError):
        log.error("unexpected error in a stream", exc_info=exc)
    return error_body(exc)


_EVENT_ID = re.compile(r"[0-9]{1,16}")


def resume_point(
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="start after this event id")] = 0,
    last_event_id: Annotated[
        str | None,
        Header(
            max_length=20,
            description="the last event id seen (what a browser EventSource resends); "
            "the stream starts after the larger of it and `after`",
        ),
    ] = None,
) -> int:
    """Where a stream starts; a dependency, so a bad value is a 422 before the stream opens.

    A browser EventSource reconnects with Last-Event-ID instead of our query parameter.
    """
    if last_event_id is None or not last_event_id.strip():
        return after
    text = last_event_id.strip()
    if not _EVENT_ID.fullmatch(text) or int(text) > MAX_ID:
        raise InvalidInput(
            f"Last-Event-ID must be an event id (a whole number up to {MAX_ID}), got {text[:20]!r}"
        )
    return max(after, int(text))


def event_kinds(
    type: Annotated[
        list[str] | None,
        Query(
            max_length=100,
            description="only these: a category (rollout, instance, router, ...) or a kind "
            "(rollout.failed); repeat it or separate with commas",
        ),
    ] = None,
) -> frozenset[EventKind] | None:
    if not type:
        return None
    names = [part for value in type for part in value.split(",")]
    try:
        return kinds_matching(clip(name, 60) for name in names)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


Kinds = Annotated[frozenset[EventKind] | None, Depends(event_kinds)]


class EventKindsOut(BaseModel):
    kinds: list[EventKind]
    categories: list[str]


def _since(text: str | None) -> datetime | None:
    if text is None or not text.strip():
        return None
    try:
        seconds = parse_duration(text.strip())
    except ValueError as exc:
        raise InvalidInput(f"since: {exc} (e.g. 10m, 90s, 2h)") from exc
    return datetime.now(UTC) - timedelta(seconds=seconds)


def visible_events(
    key: OptionalKey, grant: Annotated[Grant, requires(Permission.READ)]
) -> Callable[[Event], bool]:
    """Which events the token sees: one app's (its environment checked first, before a
    stream starts), or every event of the environments it may read (kiln's own, with no app,
    included)."""
    if key is not None:
        grant.require(key.environment)
        return lambda _event: True
    return lambda event: grant.sees(event.key.environment if event.key else None)


def streams_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["events and logs"])

    @router.get("/events", summary="Events, oldest first (the last `limit` when after is 0)")
    async def list_events(
        key: OptionalKey,
        kinds: Kinds,
        visible: Annotated[Callable[[Event], bool], Depends(visible_events)],
        after: Annotated[
            int, Query(ge=0, le=MAX_ID, description="only events with a larger id")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[EventOut]:
        events = await service.events(key=key, after_id=after, limit=limit, kinds=kinds)
        return [event_out(e) for e in events if visible(e)]

    @router.get(
        "/event-kinds",
        summary="Every event kind and category",
        dependencies=[requires(Permission.READ)],
    )
    async def list_event_kinds() -> EventKindsOut:
        return EventKindsOut(kinds=list(EventKind), categories=event_categories())

    @router.get(
        "/events/stream",
        summary="Follow events as Server-Sent Events; resume with after= or Last-Event-ID",
        description="Each event: `id:` its id, `data:` the event as JSON (EventOut). An error "
        "after the stream started arrives as `event: error` with the JSON error shape as "
        "`data`; errors before it are ordinary JSON answers. A `: ping` comment comes after "
        "15 s of silence.",
        response_class=EventSourceResponse,
    )
    async def stream_events(
        key: OptionalKey,
        kinds: Kinds,
        start: Annotated[int, Depends(resume_point)],
        visible: Annotated[Callable[[Event], bool], Depends(visible_events)],
    ) -> AsyncIterator[ServerSentEvent]:
        try:
            async for event in service.follow_events(key=key, after_id=start, kinds=kinds):
                # No `event:` field: a browser EventSource's onmessage sees only unnamed ones.
                if visible(event):
                    yield ServerSentEvent(id=str(event.id), data=event_out(event))
        except Exception as exc:
            yield ServerSentEvent(event="error", data=_error_body(exc))

    @router.get(
        "/apps/{env}/{app}/logs",
        summary="Log lines of the app's instances as NDJSON; follow=true keeps streaming",
        response_class=StreamingResponse,
        dependencies=[requires(Permission.READ)],
        responses={
            200: {
                "description": "one JSON LogLine per line",
                "content": {NDJSON: {"schema": LogLineOut.model_json_schema()}},
            }
        },
    )
    async def logs(
        key: Key,
        instance: Annotated[
            str | None, Query(max_length=200, description="one instance id")
        ] = None,
        follow: bool = False,
        tail: Annotated[int, Query(ge=0, le=100_000, description="lines of history")] = 100,
        release: Annotated[
            int | None, Query(ge=1, le=MAX_ID, description="only this release's instances")
        ] = None,
        since: Annotated[
            str | None,
            Query(max_length=20, description="only lines of the last 10m, 90s, 2h, ..."),
        ] = None,
        grep: Annotated[
            str | None, Query(max_length=200, description="only lines containing this text")
        ] = None,
        router: Annotated[
            bool, Query(description="NGINX's access lines of the app instead of its output")
        ] = False,
    ) -> StreamingResponse:
        # Checked before streaming so that an unknown app is a plain 404, not an in-stream error.
        await service.status(key)
        request = LogRequest(release=release, since=_since(since), grep=grep or None, router=router)

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for line in service.logs(
                    key, instance=instance, follow=follow, tail=tail, request=request
                ):
                    yield log_line_out(line).model_dump_json().encode() + b"\n"
            except Exception as exc:
                yield json.dumps(_error_body(exc)).encode() + b"\n"

        return StreamingResponse(lines(), media_type=NDJSON)

    return router
