"""HTTP and TCP probes against instances that misbehave on the wire: answers in pieces, hang-ups
and resets in the middle of the status line, answers that are no HTTP, connections that never
complete; IPv6 and host names. A probe always closes its connection, whatever happened."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import struct
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Literal

import pytest

from kiln.health import run_probe
from kiln.spec import Probe

from ..support import LocalServer, eventually

SPLIT = None
"""A step of a script: wait before sending the rest, so the probe reads the answer in pieces."""

Ending = Literal["hold", "close", "reset"]
"""How the instance ends the connection once its script is sent: ``hold`` keeps it open until
the probe closes it; ``close`` hangs up; ``reset`` aborts it (the probe sees a TCP reset)."""


class RawInstance(LocalServer):
    """A TCP server that reads a request head, sends scripted bytes and ends as told.

    ``requests`` counts the requests read; ``closed_by_probe`` counts connections the probe
    closed while the instance held them open."""

    def __init__(self, script: Sequence[bytes | None], ending: Ending, host: str) -> None:
        super().__init__(host)
        self.script = script
        self.ending = ending
        self.requests = 0
        self.closed_by_probe = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = self._tracked()
        try:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:  # a tcp probe: connected, closed, sent nothing
                self.closed_by_probe += 1
                return
            self.requests += 1
            for step in self.script:
                if step is SPLIT:
                    # Not a wait for a condition: the probe reads what came so far meanwhile.
                    await asyncio.sleep(0.05)
                else:
                    writer.write(step)
                    await writer.drain()
            if self.ending == "hold":
                # A probe that closes with unread answer bytes in its buffer sends a reset.
                with contextlib.suppress(ConnectionResetError):
                    while await reader.read(4096):
                        pass
                self.closed_by_probe += 1
            elif self.ending == "reset":
                # Linger 0: closing sends a reset instead of a FIN.
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            await self._closed(writer, task)


@contextlib.asynccontextmanager
async def instance(
    *script: bytes | None, ending: Ending = "close", host: str = "127.0.0.1"
) -> AsyncIterator[RawInstance]:
    server = RawInstance(script, ending, host)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def open_sockets() -> set[str]:
    """This process's open sockets (``socket:[inode]``): other tests' descriptors that close
    meanwhile in this worker do not count, only sockets that are new."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed while we looked
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:"):
                found.add(target)
    return found


async def probe_http(server: RawInstance, timeout: float = 5.0) -> tuple[bool, str]:
    """GET /p: (ok, detail)."""
    probe = Probe(http="/p", timeout=timeout, interval=max(1.0, timeout))
    result = await run_probe(probe, host=server.host, port=server.port, exec_fn=None)
    return result.ok, result.detail


async def test_a_status_line_that_comes_in_two_pieces_is_read_whole() -> None:
    async with instance(b"HTTP/1.1 2", SPLIT, b"00 OK\r\nContent-Length: 0\r\n\r\n") as server:
        assert await probe_http(server) == (True, "GET /p → 200")


async def test_the_probe_closes_its_connection_once_it_has_the_status_line() -> None:
    """An instance that keeps the connection open after answering does not hold the probe up
    until its timeout, and is not left with the probe's connection open."""
    async with instance(b"HTTP/1.1 200 OK\r\n", ending="hold") as server:
        assert await probe_http(server, timeout=30) == (True, "GET /p → 200")
        await eventually(lambda: server.closed_by_probe == 1, "the probe closed its connection")


async def test_a_hang_up_in_the_middle_of_the_status_line_is_not_an_http_answer() -> None:
    async with instance(b"HTTP/1.") as server:
        assert await probe_http(server) == (False, "GET /p: not an HTTP answer")


async def test_a_hang_up_after_a_status_line_without_its_line_end_still_counts() -> None:
    """What came before the hang-up is the status line."""
    async with instance(b"HTTP/1.1 503", SPLIT) as server:
        assert await probe_http(server) == (False, "GET /p → 503")


async def test_a_reset_before_any_answer_says_so() -> None:
    async with instance(ending="reset") as server:
        assert await probe_http(server) == (False, f"connection reset by 127.0.0.1:{server.port}")


async def test_a_reset_in_the_middle_of_the_status_line_says_so() -> None:
    async with instance(b"HTTP/1.1 2", SPLIT, ending="reset") as server:
        assert await probe_http(server) == (False, f"connection reset by 127.0.0.1:{server.port}")


@pytest.mark.parametrize("ending", ["hold", "close"])
async def test_more_than_8_kib_without_a_line_end_is_not_an_http_answer(ending: Ending) -> None:
    async with instance(b"x" * 5000, SPLIT, b"x" * 5000, ending=ending) as server:
        assert await probe_http(server, timeout=30) == (False, "GET /p: not an HTTP answer")
        if ending == "hold":
            await eventually(lambda: server.closed_by_probe == 1, "the probe closed its connection")


async def test_a_long_status_line_within_8_kib_is_read() -> None:
    async with instance(b"HTTP/1.1 302 " + b"F" * 8000 + b"\r\n\r\n") as server:
        assert await probe_http(server) == (True, "GET /p → 302")


async def test_a_probe_that_times_out_closes_its_connection() -> None:
    async with instance(ending="hold") as server:
        assert await probe_http(server, timeout=0.2) == (False, "timed out after 0.2s")
        await eventually(lambda: server.closed_by_probe == 1, "the probe closed its connection")


async def test_a_cancelled_probe_closes_its_connection() -> None:
    async with instance(ending="hold") as server:
        task = asyncio.create_task(probe_http(server))
        await eventually(lambda: server.requests == 1, "the probe sent its request")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: server.closed_by_probe == 1, "the probe closed its connection")


@pytest.fixture
def full_listener() -> Iterator[int]:
    """A port on 127.0.0.1 whose listen queue is full: a connect to it never completes."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        # A backlog of 0 queues one connection; the kernel drops later SYNs until it is accepted.
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            yield port


@pytest.mark.parametrize("kind", ["http", "tcp"])
async def test_a_connect_that_never_completes_times_out_and_leaves_no_socket_open(
    full_listener: int, kind: str
) -> None:
    if kind == "http":
        probe = Probe(http="/p", timeout=0.2, interval=1)
    else:
        probe = Probe(tcp=True, timeout=0.2, interval=1)
    # The first connect that never completes opens one descriptor in uvloop's libuv that it
    # keeps for good (not one per probe): count from after it.
    await run_probe(probe, host="127.0.0.1", port=full_listener, exec_fn=None)
    before = open_sockets()
    for _ in range(3):
        result = await run_probe(probe, host="127.0.0.1", port=full_listener, exec_fn=None)
        assert (result.ok, result.detail) == (False, "timed out after 0.2s")
    gc.collect()  # an unclosed socket or transport would warn here (warnings are errors)
    await eventually(lambda: not open_sockets() - before, "the probes' sockets are closed")


async def test_a_tcp_probe_closes_its_connection() -> None:
    async with instance(ending="hold") as server:
        result = await run_probe(Probe(tcp=True), host="127.0.0.1", port=server.port, exec_fn=None)
        assert (result.ok, result.detail) == (True, f"connected to 127.0.0.1:{server.port}")
        await eventually(lambda: server.closed_by_probe == 1, "the probe closed its connection")


async def test_probes_reach_an_ipv6_literal() -> None:
    async with instance(b"HTTP/1.1 200 OK\r\n\r\n", host="::1") as server:
        assert await probe_http(server) == (True, "GET /p → 200")
        result = await run_probe(Probe(tcp=True), host="::1", port=server.port, exec_fn=None)
        assert (result.ok, result.detail) == (True, f"connected to [::1]:{server.port}")


async def test_a_refused_ipv6_literal_names_the_address() -> None:
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]
    result = await run_probe(Probe(http="/p"), host="::1", port=port, exec_fn=None)
    assert (result.ok, result.detail) == (False, f"connection refused on [::1]:{port}")


async def test_probes_reach_a_host_name() -> None:
    # Listen where the name resolves first: that is the address the probe tries.
    first = str(socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)[0][4][0])
    async with instance(b"HTTP/1.1 204 No Content\r\n\r\n", host=first) as server:
        probe = Probe(http="/p", timeout=5, interval=5)
        result = await run_probe(probe, host="localhost", port=server.port, exec_fn=None)
        assert (result.ok, result.detail) == (True, "GET /p → 204")
        result = await run_probe(Probe(tcp=True), host="localhost", port=server.port, exec_fn=None)
        assert (result.ok, result.detail) == (True, f"connected to localhost:{server.port}")
