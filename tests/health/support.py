"""A scripted HTTP server on 127.0.0.1 and a polling helper for the health tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

HANG = None
"""A behaviour that returns HANG keeps the request open without answering."""

CLOSE = -1
"""A behaviour that returns CLOSE drops the connection without answering."""

Behaviour = Callable[[str, int], int | None]
"""(path, how many requests this path has had, this one included) -> status, HANG or CLOSE."""


class LocalServer:
    """A TCP server on ``host`` (an ephemeral port) whose connection handlers ``stop`` cancels
    and waits for; subclasses answer in ``_handle`` after calling ``_tracked()``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[object]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def _tracked(self) -> asyncio.Task[object]:
        """Note the running handler, so that ``stop`` ends it; it discards itself as it ends."""
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        return task

    async def _closed(self, writer: asyncio.StreamWriter, task: asyncio.Task[object]) -> None:
        """End the connection and forget its handler (a handler's last step)."""
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        self._handlers.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class ScriptedHttpServer(LocalServer):
    """A real HTTP/1.1 server whose answers a test scripts per path and request count."""

    def __init__(self, behaviour: Behaviour) -> None:
        super().__init__()
        self.behaviour = behaviour
        self.requests: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.answers: list[int | None] = []  # the status given to each request, in order
        self.connections = 0

    def count(self, path: str) -> int:
        return self.requests.count(path)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = self._tracked()
        self.connections += 1
        try:
            line = await reader.readline()
            if not line:
                return  # a tcp probe: connect and go
            headers: dict[str, str] = {}
            while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = header.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            path = line.decode("latin-1").split()[1]
            self.requests.append(path)
            self.headers.append(headers)
            status = self.behaviour(path, self.count(path))
            self.answers.append(status)
            if status is HANG:
                await asyncio.Event().wait()
                return
            if status == CLOSE:
                return
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            await self._closed(writer, task)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.005)
