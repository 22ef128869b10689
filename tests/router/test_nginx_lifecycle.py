"""NGINX outlives kiln, is adopted by the next kiln, and comes back with its peers after a kill."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kiln.model import AppKey, RouteEntry, TrafficPolicy
from kiln.router import nginx as nginx_module
from kiln.router.nginx import NginxRouter

from .conftest import Backends
from .support import fetch, peer

pytestmark = pytest.mark.integration

WEB = AppKey("dev", "web")


async def wait_until_gone(pids: set[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"processes {pids} still alive"
        await asyncio.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


KILN_THAT_DIES = """
import asyncio, os, sys
from pathlib import Path
from kiln.model import AppKey, Peer, RouteEntry
from kiln.router import nginx as nginx_module
from kiln.router.nginx import NginxRouter

async def main() -> None:
    router = NginxRouter(prefix=Path(sys.argv[1]), listen_host="127.0.0.1",
                         listen_port=int(sys.argv[2]), run_dir=Path(sys.argv[3]))
    await router.start()
    await router.apply_routes([RouteEntry(None, "/", AppKey("dev", "web"))])
    await router.set_peers(AppKey("dev", "web"), [Peer("blue", "127.0.0.1", int(sys.argv[4]))])

asyncio.run(main())
os._exit(0)  # no cleanup of any kind, like a crash
"""


async def test_nginx_keeps_serving_after_kiln_dies_and_the_next_kiln_adopts_it(
    make_router: Callable[[], NginxRouter], backends: Backends
) -> None:
    blue = backends.start("blue")
    template = make_router()
    try:
        kiln = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            KILN_THAT_DIES,
            str(template.prefix),
            str(template.listen_port),
            str(template.run_dir),
            str(blue),
        )
        assert await asyncio.wait_for(kiln.wait(), 60) == 0

        master, workers = template.master_pid(), template.worker_pids()
        assert master is not None
        assert fetch(template.listen_port, "/").body == "blue"

        next_kiln = make_router()
        await next_kiln.start()

        assert next_kiln.master_pid() == master
        assert next_kiln.worker_pids() == workers
        assert await next_kiln.get_peers() == {WEB: [peer("blue", blue)]}
        assert await next_kiln.apply_routes([RouteEntry(None, "/", WEB)]) is False
        assert fetch(next_kiln.listen_port, "/").body == "blue"
    finally:
        await make_router().stop()


async def test_start_twice_adopts_rather_than_restarting(router: NginxRouter) -> None:
    master = router.master_pid()

    await router.start()

    assert router.master_pid() == master
    assert await router.is_running()


async def test_a_killed_nginx_is_started_again_serving_the_persisted_peers(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(WEB, [peer("blue", backends.start("blue"))])
    master = router.master_pid()
    assert master is not None
    everything = {master, *router.worker_pids()}
    for pid in everything:
        os.kill(pid, signal.SIGKILL)
    await wait_until_gone(everything)
    assert not await router.is_running()

    await router.start()

    assert router.master_pid() not in (None, master)
    assert fetch(router.listen_port, "/").body == "blue"  # before any new set_peers


async def test_workers_orphaned_by_a_killed_master_are_replaced_on_start(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(WEB, [peer("blue", backends.start("blue"))])
    master = router.master_pid()
    assert master is not None
    orphans = router.worker_pids()
    os.kill(master, signal.SIGKILL)
    await wait_until_gone({master})
    assert not await router.is_running()

    await router.start()

    await wait_until_gone(orphans)
    assert router.worker_pids().isdisjoint(orphans)
    assert fetch(router.listen_port, "/").body == "blue"


async def test_a_restart_uses_the_last_applied_routes(
    make_router: Callable[[], NginxRouter], router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/only/", WEB)])
    await router.set_peers(WEB, [peer("blue", backends.start("blue"))])
    await router.stop()
    assert not await router.is_running()

    fresh = make_router()
    await fresh.start()

    assert fetch(fresh.listen_port, "/only/x").body == "blue"
    assert fetch(fresh.listen_port, "/").status == 404


async def test_stop_ends_master_and_workers(router: NginxRouter) -> None:
    master = router.master_pid()
    assert master is not None
    everything = {master, *router.worker_pids()}

    await router.stop()

    await wait_until_gone(everything)
    assert not await router.is_running()
    assert not router.admin_socket.exists()


async def test_wait_exited_returns_when_the_master_dies(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(WEB, [peer("blue", backends.start("blue"))])
    waiter = asyncio.create_task(router.wait_exited())
    assert (await asyncio.to_thread(fetch, router.listen_port, "/")).body == "blue"
    assert not waiter.done()

    master = router.master_pid()
    assert master is not None
    os.kill(master, signal.SIGKILL)

    await asyncio.wait_for(waiter, 10)
    assert router.master_pid() is None


async def test_wait_exited_returns_at_once_when_nginx_does_not_run(
    make_router: Callable[[], NginxRouter],
) -> None:
    await asyncio.wait_for(make_router().wait_exited(), 10)


async def test_a_pid_file_naming_another_process_is_no_master(
    make_router: Callable[[], NginxRouter],
) -> None:
    router = make_router()
    router.pid_file.parent.mkdir(parents=True, exist_ok=True)
    router.pid_file.write_text(f"{os.getpid()}\n")  # the master died and its pid was reused
    assert router.master_pid() is None
    assert router.worker_pids() == set()
    await asyncio.wait_for(router.wait_exited(), 10)


async def test_a_start_after_the_master_died_restores_routes_peers_and_policy(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes(
        [RouteEntry(None, "/", WEB), RouteEntry(None, "/preview/", WEB, preview=True)]
    )
    peers = [
        peer("stable", backends.start("stable"), release=1),
        peer("canary", backends.start("canary"), release=2),
        peer("green", backends.start("green"), release=3),
    ]
    policy = TrafficPolicy(shares=((1, 100), (2, 0)), canary=2, preview=3)
    await router.set_peers(WEB, peers, policy)
    master = router.master_pid()
    assert master is not None
    orphans = router.worker_pids()
    waiter = asyncio.create_task(router.wait_exited())
    os.kill(master, signal.SIGKILL)  # its workers linger, holding the port
    await asyncio.wait_for(waiter, 10)

    await router.start()

    assert router.master_pid() not in (None, master)
    assert router.worker_pids().isdisjoint(orphans)
    assert await router.get_peers() == {WEB: peers}
    assert await router.get_policies() == {WEB: policy}
    port = router.listen_port
    assert fetch(port, "/").body == "stable"
    assert fetch(port, "/", headers={"X-Kiln-Canary": "always"}).body == "canary"
    assert fetch(port, "/preview/x").body == "green"
    await wait_until_gone(orphans)


async def test_a_start_after_the_master_died_does_not_wait_for_requests_orphans_still_serve(
    router: NginxRouter, backends: Backends
) -> None:
    await router.apply_routes([RouteEntry(None, "/", WEB)])
    await router.set_peers(WEB, [peer("blue", backends.start("blue"))])
    held = asyncio.create_task(asyncio.to_thread(fetch, router.listen_port, "/?hold=1"))
    deadline = time.monotonic() + 10
    while backends["blue"].in_progress() == 0:
        assert time.monotonic() < deadline, "the held request never reached blue"
        await asyncio.sleep(0.01)
    master = router.master_pid()
    assert master is not None
    os.kill(master, signal.SIGKILL)
    await wait_until_gone({master})

    await router.start()

    assert backends["blue"].in_progress() == 1  # start() did not wait for it
    assert fetch(router.listen_port, "/").body == "blue"  # the new NGINX serves
    backends["blue"].release_held()
    answer = await held
    assert (answer.status, answer.body) == (200, "blue")  # the orphan finished it


async def test_peers_of_many_apps_set_at_once_share_file_writes_and_all_survive_a_kill(
    router: NginxRouter, backends: Backends, monkeypatch: pytest.MonkeyPatch
) -> None:
    apps = [AppKey("dev", f"app{n:02d}") for n in range(30)]
    await router.apply_routes([RouteEntry(f"{key.app}.test", "/", key) for key in apps])
    port = backends.start("blue")
    writes = 0
    write_atomic = nginx_module._write_atomic

    def counting_write(path: Path, data: bytes) -> None:
        nonlocal writes
        writes += 1
        write_atomic(path, data)

    monkeypatch.setattr(nginx_module, "_write_atomic", counting_write)

    await asyncio.gather(*(router.set_peers(key, [peer("blue", port)]) for key in apps))

    # Each app's set_peers returned only once the file held its list, yet the 30 changes of
    # one moment went to disk in far fewer writes than 30.
    assert writes < len(apps) / 2
    master = router.master_pid()
    assert master is not None
    everything = {master, *router.worker_pids()}
    for pid in everything:
        os.kill(pid, signal.SIGKILL)
    await wait_until_gone(everything)
    await router.start()
    assert set(await router.get_peers()) == set(apps)
    assert fetch(router.listen_port, "/", host="app29.test").body == "blue"
