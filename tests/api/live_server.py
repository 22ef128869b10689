"""A real uvicorn server in a background thread, serving an ASGI app on a free loopback port
or on a unix socket.

Streams (SSE, followed logs) only show their behaviour over a real connection: in-process
test transports wait for the whole body, which a stream never finishes. The server speaks
through ``PeerCredentialsProtocol``, as kiln's server does, so requests on the unix socket
carry the kernel's word on who connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from kiln.api.peer import PeerCredentialsProtocol

STARTUP_DEADLINE = 10.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test process keeps its own signal handlers


def _tcp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _unix_socket(path: Path) -> socket.socket:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    return sock


@contextmanager
def running_server(app: FastAPI, *, unix_path: Path | None = None) -> Iterator[str]:
    """Serve ``app``; yields its base URL (``http://127.0.0.1:PORT``, or ``http://kiln`` on
    ``unix_path``); stops it (and waits for the thread) on exit."""
    sock = _unix_socket(unix_path) if unix_path is not None else _tcp_socket()
    # Listening before uvicorn starts: the first requests wait in the backlog instead of being
    # refused (httpcore leaves a refused unix socket to the garbage collector, and the
    # ResourceWarning then fails whichever test runs next).
    sock.listen(128)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=3,
        http=PeerCredentialsProtocol,
    )
    server = _Server(config)
    loop_ready = threading.Event()
    holder: dict[str, asyncio.AbstractEventLoop] = {}

    def run() -> None:
        async def main() -> None:
            holder["loop"] = asyncio.get_running_loop()
            loop_ready.set()
            await server.serve(sockets=[sock])

        asyncio.run(main())

    thread = threading.Thread(target=run, name="uvicorn", daemon=True)
    thread.start()
    if unix_path is not None:
        base_url = "http://kiln"
        transport: httpx.HTTPTransport = httpx.HTTPTransport(uds=str(unix_path))
    else:
        base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        transport = httpx.HTTPTransport()
    try:
        assert loop_ready.wait(STARTUP_DEADLINE), "the server thread did not start"
        _wait_until_serving(base_url, transport)
        yield base_url
    finally:
        loop = holder.get("loop")
        if loop is not None:
            loop.call_soon_threadsafe(setattr, server, "should_exit", True)
        thread.join(timeout=STARTUP_DEADLINE)
        sock.close()
        assert not thread.is_alive(), "the server thread did not stop"


def _wait_until_serving(base_url: str, transport: httpx.HTTPTransport) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    with httpx.Client(transport=transport, base_url=base_url, timeout=1.0) as client:
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.01)
