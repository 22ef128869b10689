"""The embedded registry as a user's kiln runs it: the real ``docker-registry`` on loopback,
storage under KILN_HOME, one port for life, adopted across restarts, restarted read-only for
garbage collection."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from kiln.errors import InvalidInput
from kiln.registry.embedded import PORT_RANGE, EmbeddedRegistry

pytestmark = pytest.mark.integration


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[EmbeddedRegistry]:
    embedded = EmbeddedRegistry(tmp_path / "registry")
    try:
        await embedded.start()
        yield embedded
    finally:
        await embedded.stop()
        await embedded.close()


async def test_serves_the_distribution_api_on_loopback_with_storage_under_home(
    registry: EmbeddedRegistry, tmp_path: Path
) -> None:
    assert registry.host.startswith("127.0.0.1:")
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://{registry.host}/v2/", timeout=5)
    assert answer.status_code == 200
    assert f"127.0.0.1:{registry.port}" in registry.config_path.read_text()
    assert str(tmp_path / "registry" / "data") in registry.config_path.read_text()
    assert await registry.manifest_digest("nothing", "v1") is None


async def test_keeps_its_port_and_adopts_the_running_process(
    registry: EmbeddedRegistry, tmp_path: Path
) -> None:
    again = EmbeddedRegistry(tmp_path / "registry")
    assert again.port == registry.port  # releases name it: it never changes by itself
    pid = registry.pid()
    await again.start()
    assert again.pid() == pid  # adopted, not a second process
    await again.close()


async def test_a_killed_registry_is_seen_exiting_and_started_again(
    registry: EmbeddedRegistry,
) -> None:
    pid = registry.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await registry.wait_exited()
    assert await registry.ensure_running() is True
    assert registry.pid() not in (None, pid)
    assert await registry.ensure_running() is False


async def test_a_port_held_by_another_process_is_refused_naming_it(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        embedded = EmbeddedRegistry(tmp_path / "registry", port=port)
        with pytest.raises(InvalidInput, match=f"127.0.0.1:{port} is taken.*registry.port"):
            await embedded.start()
        await embedded.close()


async def test_garbage_collection_restarts_it_and_it_serves_after(
    registry: EmbeddedRegistry,
) -> None:
    summary = await registry.garbage_collect()
    assert "nothing to collect" in summary
    assert await registry.is_running()
    assert "enabled: false" in registry.config_path.read_text().split("readonly:")[1]


def test_its_port_is_chosen_below_the_kernels_ephemeral_ports_and_kept(tmp_path: Path) -> None:
    # An ephemeral port can be an outgoing connection's local port when the registry restarts.
    first, last = (
        int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    )
    chosen = EmbeddedRegistry(tmp_path / "registry").port
    assert PORT_RANGE[0] <= chosen <= PORT_RANGE[1]
    assert not first <= chosen <= last
    assert EmbeddedRegistry(tmp_path / "registry").port == chosen
