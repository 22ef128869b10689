"""A real uvicorn server in a background thread, serving an ASGI app on a free loopback port.

Streams (SSE, followed logs) only show their behaviour over a real connection: in-process
test transports wait for the whole body, which a stream never finishes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from fastapi import FastAPI

from kiln.api.server import bind_socket, serve

STARTUP_DEADLINE = 10.0


@contextmanager
def running_server(app: FastAPI) -> Iterator[str]:
    """Serve ``app``; yields its base URL; stops it (and waits for the thread) on exit."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    loop_ready = threading.Event()
    holder: dict[str, object] = {}

    def run() -> None:
        async def main() -> None:
            stop = asyncio.Event()
            holder["loop"], holder["stop"] = asyncio.get_running_loop(), stop
            loop_ready.set()
            await serve(app, sock, stop)

        asyncio.run(main())

    thread = threading.Thread(target=run, name=f"uvicorn:{port}", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        assert loop_ready.wait(STARTUP_DEADLINE), "the server thread did not start"
        _wait_until_serving(base_url)
        yield base_url
    finally:
        loop = holder.get("loop")
        stop = holder.get("stop")
        if isinstance(loop, asyncio.AbstractEventLoop) and isinstance(stop, asyncio.Event):
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=STARTUP_DEADLINE)
        sock.close()
        assert not thread.is_alive(), "the server thread did not stop"


def _wait_until_serving(base_url: str) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    while True:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.01)
