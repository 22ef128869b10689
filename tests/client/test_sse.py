"""An event stream read as the server writes it: heartbeats and bare ids are no events."""

from __future__ import annotations

import httpx
import pytest
from httpx_sse import SSEError

from kiln.client.sse import sse_messages

STREAM = (
    ": ping\n\n"
    'id: 1\ndata: {"id": 1}\n\n'
    ": ping\n\n"  # after an id, httpx-sse reports this block as a data-less event: skipped
    'id: 2\nevent: error\ndata: {"error":\ndata:  "x"}\n\n'
    'id: 3\ndata: {"id": 3, "cut"'  # the connection ends mid-event
)


def answer(body: str, content_type: str = "text/event-stream") -> httpx.Response:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, text=body)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        return client.get("http://kiln.test/v1/events/stream")


def test_events_come_with_their_type_and_joined_data_and_nothing_else() -> None:
    messages = [(m.event, m.id, m.data) for m in sse_messages(answer(STREAM))]
    assert messages == [
        ("message", "1", '{"id": 1}'),
        ("error", "2", '{"error":\n "x"}'),
    ]


def test_an_answer_that_is_not_an_event_stream_is_refused() -> None:
    with pytest.raises(SSEError, match="text/event-stream"):
        list(sse_messages(answer('{"id": 1}', content_type="application/json")))
    assert issubclass(SSEError, httpx.TransportError)  # the client maps it as a lost stream
