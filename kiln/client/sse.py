"""The events of a Server-Sent Events response (``text/event-stream``), parsed by httpx-sse.

What kiln's ``/v1/events/stream`` sends, and what becomes of it here:

": ping"            a comment (heartbeat): dropped by httpx-sse
"id: 42"            the event's id: each event's JSON carries it too, which is what
                    ``follow_events`` resumes after (``after=``)
"event: error"      the event's type (default "message")
"data: {...}"       payload; several data lines join with "\\n"
""                  end of one event

A block without data (a heartbeat after an event: httpx-sse repeats the last id for it) is no
event and is skipped, as the SSE rules say. A stream cut mid-event drops that event. A 200
answer that is not an event stream raises ``httpx_sse.SSEError``, an ``httpx.TransportError``,
which the client maps like a lost connection.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from httpx_sse import EventSource, ServerSentEvent


def sse_messages(response: httpx.Response) -> Iterator[ServerSentEvent]:
    for message in EventSource(response).iter_sse():
        if message.data:
            yield message
