"""A Server-Sent Events parser over lines of text (the ``text/event-stream`` format).

": ping"            a comment (heartbeat): ignored
"id: 42"            the event's id: ignored, each event's JSON carries its own id
"event: error"      the event's type (default "message")
"data: {...}"       payload; several data lines join with "\\n"
""                  end of one event
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class SseMessage:
    event: str
    data: str


def parse_sse(lines: Iterable[str]) -> Iterator[SseMessage]:
    event = ""
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield SseMessage(event=event or "message", data="\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    # A stream cut mid-event drops that event, as the SSE rules say.
