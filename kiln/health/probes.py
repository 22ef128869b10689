"""One health check of one instance: http, tcp or command, always bounded by the probe's timeout.

``run_probe`` never raises (only cancellation goes through): every failure becomes a
``ProbeResult`` with ``ok=False`` and a short ``detail`` a person can read in ``kiln status``,
such as ``"GET /healthz → 500"``, ``"connection refused on 127.0.0.1:32771"``,
``"timed out after 1s"`` or ``"exit code 3"``.

A timeout is only the instance's fault when kiln was listening. If the event loop that runs the
probe wakes late for its deadline (a 2-core machine busy with 300 instances and a deploy of 99
apps, measured by bench/scale.py: seconds late), the answer may have been waiting unread, and
every instance would look dead at once. Such a probe is ``inconclusive``: neither a pass nor a
failure (the monitor decides what a run of them means).

HTTP goes over the event loop's own transport with a minimal protocol (``_StatusLine``: write
the request once connected, stop reading at the status line's end) rather than an HTTP client:
a probe needs one request and the status line, and a client library would bring connection
pools and retries that hide what the instance actually did. Not asyncio's streams either (a
reader and writer around the same transport, more futures per probe). kiln probes every
instance every second or two (300 instances every 1 s: 300 new connections a second), so the
CPU of one probe is kiln's idle cost. ``python -m bench.probes --interval 1`` (300 instances,
CPU of the probing process), against plain non-blocking socket calls (``sock_connect``,
``sock_sendall``, ``sock_recv``), which probes used before:

- uvloop (the server's loop): http 0.078-0.087 -> 0.052-0.055 ms a probe (2.3-2.6 -> 1.6 % of a
  core), tcp 0.063-0.072 -> 0.042-0.051 ms. uvloop connects, writes and reads in C here, and
  an IP literal given with its family is parsed in place; uvloop's ``sock_connect`` sent every
  probe's address through getaddrinfo in libuv's thread pool.
- asyncio's own loop (``KILN_EVENT_LOOP=asyncio``): *dearer*, http 0.08-0.10 -> 0.13-0.18 ms,
  tcp 0.055-0.083 -> 0.09-0.13 ms: its ``create_connection`` and transport are Python around
  the same socket calls, with a dozen more callbacks per connection.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import cast

from kiln.spec import Probe

ExecFn = Callable[[Sequence[str], float], Awaitable[int]]
"""Runs ``command`` inside the instance with a timeout and returns its exit code
(``Driver.exec`` bound to a container)."""

_MAX_STATUS_LINE = 8 * 1024

_LATE_FLOOR = 0.1
"""How late (seconds) the loop may wake for a probe's deadline before the timeout says more about
kiln than about the instance; at least this, or a quarter of the probe's timeout."""


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str
    # No answer by the deadline, but kiln's loop woke too late to tell whether one had come.
    inconclusive: bool = False


async def run_probe(
    probe: Probe,
    *,
    host: str | None,
    port: int | None,
    exec_fn: ExecFn | None,
) -> ProbeResult:
    """Run ``probe`` once against ``host:port`` (http, tcp) or through ``exec_fn`` (command)."""
    kind = probe.kind
    loop = asyncio.get_running_loop()
    deadline = loop.time() + probe.timeout
    try:
        async with asyncio.timeout_at(deadline):
            if kind == "command":
                return await _command(probe, exec_fn)
            if host is None or port is None:
                return ProbeResult(False, f"{kind} probe needs an address; the instance has none")
            if kind == "http":
                return await _http(probe.http or "/", host, port)
            return await _tcp(host, port)
    except TimeoutError:
        late = loop.time() - deadline
        if late > max(_LATE_FLOOR, probe.timeout / 4):
            return ProbeResult(
                False,
                f"no answer within {probe.timeout:g}s, but kiln's event loop woke {late:.2f}s"
                " late: not counted",
                inconclusive=True,
            )
        return ProbeResult(False, f"timed out after {probe.timeout:g}s")
    except ConnectionRefusedError:
        return ProbeResult(False, f"connection refused on {_hostport(host, port)}")
    except ConnectionResetError:
        return ProbeResult(False, f"connection reset by {_hostport(host, port)}")
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return ProbeResult(False, f"cannot reach {_hostport(host, port)}: {reason}")
    except Exception as exc:  # a probe must never take down the loop that runs it
        return ProbeResult(False, f"{kind} probe failed: {type(exc).__name__}: {exc}")


async def _command(probe: Probe, exec_fn: ExecFn | None) -> ProbeResult:
    if exec_fn is None:
        return ProbeResult(False, "command probe needs a way to run commands in the instance")
    code = await exec_fn(list(probe.command or ()), probe.timeout)
    return ProbeResult(code == 0, f"exit code {code}")


async def _tcp(host: str, port: int) -> ProbeResult:
    transport = await _open(asyncio.Protocol, host, port)
    transport.close()
    return ProbeResult(True, f"connected to {_hostport(host, port)}")


async def _http(path: str, host: str, port: int) -> ProbeResult:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes | Exception | None] = loop.create_future()
    request = _request(path, host, port)
    transport = await _open(lambda: _StatusLine(request, answer), host, port)
    try:
        received = await answer
    finally:
        transport.close()
    if received is None:
        return ProbeResult(False, f"GET {path}: not an HTTP answer")
    if isinstance(received, Exception):
        raise received
    line = received.split(b"\n", 1)[0]
    if not line:
        return ProbeResult(False, f"GET {path}: connection closed without an answer")
    parts = line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return ProbeResult(False, f"GET {path}: not an HTTP answer")
    return _answer(path, int(parts[1]))


class _StatusLine(asyncio.Protocol):
    """Sends the request once connected and answers with what came up to the status line's end:
    those bytes; everything the peer sent before it closed (no line end at all); None when more
    than 8 KiB came without a line end (not HTTP); or the error that ended the connection.

    An error travels as the future's result, not its exception: when the probe is cancelled
    between the two, an exception nobody read would be logged as never retrieved.
    """

    __slots__ = ("_answer", "_received", "_request", "_transport")

    def __init__(self, request: bytes, answer: asyncio.Future[bytes | Exception | None]) -> None:
        self._request = request
        self._answer = answer
        self._received = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        cast(asyncio.Transport, transport).write(self._request)

    def data_received(self, data: bytes) -> None:
        self._received += data
        if b"\n" in data:  # what came before had none
            self._give(self._received)
        elif len(self._received) > _MAX_STATUS_LINE:
            self._give(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._give(self._received if exc is None else exc)

    def _give(self, answer: bytes | Exception | None) -> None:
        if not self._answer.done():
            self._answer.set_result(answer)
        self._transport.close()  # read no more (a second close does nothing)


async def _open(
    protocol_factory: Callable[[], asyncio.Protocol], host: str, port: int
) -> asyncio.Transport:
    """A transport connected to ``host:port`` (nothing left open if connecting fails)."""
    loop = asyncio.get_running_loop()
    family = _family(host)
    if family is not None:
        # An IP literal with its family and AI_NUMERICHOST: both loops parse it in place and
        # never call getaddrinfo in a thread (uvloop would first try the literal as IPv4).
        transport, _ = await loop.create_connection(
            protocol_factory, host, port, family=family, flags=socket.AI_NUMERICHOST
        )
        return transport
    # A name: resolved off the loop and only its first address tried, as before
    # (create_connection would try each and merge their errors into one message).
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"{host} does not resolve")
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
        transport, _ = await loop.create_connection(protocol_factory, sock=sock)
    except BaseException:
        sock.close()
        raise
    return transport


@functools.lru_cache(maxsize=4096)
def _request(path: str, host: str, port: int) -> bytes:
    """The probe's request, built once per instance (probes repeat it every interval)."""
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {_hostport(host, port)}\r\n"
        "User-Agent: kiln-probe\r\n"
        "Accept: */*\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("latin-1")


@functools.lru_cache(maxsize=1024)
def _answer(path: str, status: int) -> ProbeResult:
    """One result per (path, status): the same few answers come back every interval."""
    return ProbeResult(200 <= status < 400, f"GET {path} → {status}")


@functools.lru_cache(maxsize=4096)
def _family(host: str) -> socket.AddressFamily | None:
    """The address family of an IP literal; None for a name (parsed once per host, not per
    probe: ``ipaddress`` showed in profiles of 300 probes a second)."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


def _hostport(host: str | None, port: int | None) -> str:
    if host is not None and ":" in host:  # an IPv6 literal
        return f"[{host}]:{port}"
    return f"{host}:{port}"
