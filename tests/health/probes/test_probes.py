"""Probes against real sockets on 127.0.0.1, and command probes through a fake exec."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from kiln.health import run_probe
from kiln.spec import Probe

from ..support import CLOSE, HANG, ScriptedHttpServer, closed_port


async def test_http_probe_passes_on_200(server: ScriptedHttpServer) -> None:
    result = await run_probe(
        Probe(http="/healthz"), host="127.0.0.1", port=server.port, exec_fn=None
    )
    assert (result.ok, result.detail) == (True, "GET /healthz → 200")
    assert server.headers[0]["host"] == f"127.0.0.1:{server.port}"
    assert server.headers[0]["connection"] == "close"


async def test_http_probe_passes_on_a_redirect(server: ScriptedHttpServer) -> None:
    server.behaviour = lambda path, n: 302
    result = await run_probe(Probe(http="/"), host="127.0.0.1", port=server.port, exec_fn=None)
    assert result.ok


async def test_http_probe_fails_on_500_and_says_so(server: ScriptedHttpServer) -> None:
    server.behaviour = lambda path, n: 500
    result = await run_probe(
        Probe(http="/healthz"), host="127.0.0.1", port=server.port, exec_fn=None
    )
    assert (result.ok, result.detail) == (False, "GET /healthz → 500")


async def test_http_probe_times_out_on_a_server_that_hangs(server: ScriptedHttpServer) -> None:
    server.behaviour = lambda path, n: HANG
    probe = Probe(http="/healthz", timeout=0.2, interval=1)
    result = await run_probe(probe, host="127.0.0.1", port=server.port, exec_fn=None)
    assert (result.ok, result.detail) == (False, "timed out after 0.2s")


async def test_http_probe_fails_when_the_server_hangs_up(server: ScriptedHttpServer) -> None:
    server.behaviour = lambda path, n: CLOSE
    result = await run_probe(Probe(http="/h"), host="127.0.0.1", port=server.port, exec_fn=None)
    assert (result.ok, result.detail) == (False, "GET /h: connection closed without an answer")


async def test_http_probe_on_a_closed_port_is_refused() -> None:
    port = closed_port()
    result = await run_probe(Probe(http="/healthz"), host="127.0.0.1", port=port, exec_fn=None)
    assert (result.ok, result.detail) == (False, f"connection refused on 127.0.0.1:{port}")


async def test_tcp_probe_passes_when_the_port_accepts(server: ScriptedHttpServer) -> None:
    result = await run_probe(Probe(tcp=True), host="127.0.0.1", port=server.port, exec_fn=None)
    assert result.ok
    assert server.requests == []


async def test_tcp_probe_on_a_closed_port_is_refused() -> None:
    port = closed_port()
    result = await run_probe(Probe(tcp=True), host="127.0.0.1", port=port, exec_fn=None)
    assert (result.ok, result.detail) == (False, f"connection refused on 127.0.0.1:{port}")


async def test_network_probe_without_an_address_fails_clearly() -> None:
    result = await run_probe(Probe(tcp=True), host=None, port=None, exec_fn=None)
    assert not result.ok
    assert "needs an address" in result.detail


async def test_command_probe_passes_on_exit_code_0() -> None:
    seen: list[tuple[list[str], float]] = []

    async def fake_exec(command: Sequence[str], timeout: float) -> int:
        seen.append((list(command), timeout))
        return 0

    probe = Probe(command=["check", "--quick"], timeout=0.5)
    result = await run_probe(probe, host=None, port=None, exec_fn=fake_exec)
    assert (result.ok, result.detail) == (True, "exit code 0")
    assert seen == [(["check", "--quick"], 0.5)]


async def test_command_probe_fails_on_another_exit_code() -> None:
    async def fake_exec(command: Sequence[str], timeout: float) -> int:
        return 3

    result = await run_probe(Probe(command=["check"]), host=None, port=None, exec_fn=fake_exec)
    assert (result.ok, result.detail) == (False, "exit code 3")


async def test_command_probe_is_bounded_by_its_timeout() -> None:
    async def fake_exec_that_hangs(command: Sequence[str], timeout: float) -> int:
        await asyncio.Event().wait()
        return 0

    probe = Probe(command=["check"], timeout=0.1, interval=1)
    result = await run_probe(probe, host=None, port=None, exec_fn=fake_exec_that_hangs)
    assert (result.ok, result.detail) == (False, "timed out after 0.1s")


async def test_command_probe_turns_an_exec_error_into_a_failed_result() -> None:
    async def fake_exec_that_breaks(command: Sequence[str], timeout: float) -> int:
        raise RuntimeError("container is gone")

    result = await run_probe(
        Probe(command=["check"]), host=None, port=None, exec_fn=fake_exec_that_breaks
    )
    assert not result.ok
    assert "container is gone" in result.detail


async def test_command_probe_without_exec_fails_clearly() -> None:
    result = await run_probe(Probe(command=["check"]), host=None, port=None, exec_fn=None)
    assert not result.ok
    assert "command" in result.detail


async def test_a_timeout_kiln_woke_late_for_is_inconclusive(server: ScriptedHttpServer) -> None:
    """The instance answers at once, but kiln's loop is blocked past the probe's deadline (an
    overloaded machine): that says nothing about the instance, so it is neither pass nor fail."""
    probe = Probe(http="/healthz", timeout=0.2, interval=1)
    task = asyncio.create_task(run_probe(probe, host="127.0.0.1", port=server.port, exec_fn=None))
    await asyncio.sleep(0)  # the probe has started its connect
    time.sleep(0.7)  # noqa: ASYNC251 - the loop, blocked well past the deadline
    result = await task
    assert result.inconclusive and not result.ok
    assert result.detail.startswith("no answer within 0.2s, but kiln's event loop woke")
    assert result.detail.endswith("late: not counted")
