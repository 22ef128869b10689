"""One health check of one instance: http, tcp or command, always bounded by the probe's timeout.

``run_probe`` never raises (only cancellation goes through): every failure becomes a
``ProbeResult`` with ``ok=False`` and a short ``detail`` a person can read in ``kiln status``,
such as ``"GET /healthz → 500"``, ``"connection refused on 127.0.0.1:32771"``,
``"timed out after 1s"`` or ``"exit code 3"``.

HTTP goes over a raw asyncio stream rather than an HTTP client: a probe needs one request and
the status line, and a client library would bring connection pools and retries that hide what
the instance actually did.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from kiln.spec import Probe

ExecFn = Callable[[Sequence[str], float], Awaitable[int]]
"""Runs ``command`` inside the instance with a timeout and returns its exit code
(``Driver.exec`` bound to a container)."""

_MAX_STATUS_LINE = 8 * 1024


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


async def run_probe(
    probe: Probe,
    *,
    host: str | None,
    port: int | None,
    exec_fn: ExecFn | None,
) -> ProbeResult:
    """Run ``probe`` once against ``host:port`` (http, tcp) or through ``exec_fn`` (command)."""
    kind = probe.kind
    try:
        async with asyncio.timeout(probe.timeout):
            if kind == "command":
                return await _command(probe, exec_fn)
            if host is None or port is None:
                return ProbeResult(False, f"{kind} probe needs an address; the instance has none")
            if kind == "http":
                return await _http(probe.http or "/", host, port)
            return await _tcp(host, port)
    except TimeoutError:
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
    _, writer = await asyncio.open_connection(host, port)
    await _close(writer)
    return ProbeResult(True, f"connected to {_hostport(host, port)}")


async def _http(path: str, host: str, port: int) -> ProbeResult:
    reader, writer = await asyncio.open_connection(host, port, limit=_MAX_STATUS_LINE)
    try:
        request = (
            f"GET {path} HTTP/1.1\r\n"
            f"Host: {_hostport(host, port)}\r\n"
            "User-Agent: kiln-probe\r\n"
            "Accept: */*\r\n"
            "Connection: close\r\n"
            "\r\n"
        )
        writer.write(request.encode("latin-1"))
        await writer.drain()
        try:
            line = await reader.readline()
        except ValueError:  # a "line" longer than the limit: not an HTTP status line
            return ProbeResult(False, f"GET {path}: not an HTTP answer")
    finally:
        await _close(writer)
    if not line:
        return ProbeResult(False, f"GET {path}: connection closed without an answer")
    parts = line.decode("latin-1").split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return ProbeResult(False, f"GET {path}: not an HTTP answer")
    status = int(parts[1])
    return ProbeResult(200 <= status < 400, f"GET {path} → {status}")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    # The peer may already be gone; the probe's verdict is made, only the socket is left.
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _hostport(host: str | None, port: int | None) -> str:
    if host is not None and ":" in host:  # an IPv6 literal
        return f"[{host}]:{port}"
    return f"{host}:{port}"
