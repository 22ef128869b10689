"""The embedded artifact repository: the CNCF distribution registry (Debian's
``docker-registry``) on loopback, its storage under ``$KILN_HOME/registry``.

    $KILN_HOME/registry/config.yml     written by kiln (no htpasswd; binds 127.0.0.1 only)
    $KILN_HOME/registry/data/          the blobs and manifests
    $KILN_HOME/registry/port           the port, chosen once (free) unless registry.port says
    $KILN_HOME/registry/registry.pid   the process kiln started (or adopted)
    $KILN_HOME/registry/registry.log

The port is kept across restarts because releases hold ``127.0.0.1:PORT/repo@sha256:…``.
The process is detached (its own session, re-parented to init) so, like NGINX, it outlives a
kiln restart and is adopted by the next ``start()``; the controller restarts it the moment it
exits (``wait_exited`` wakes on a pidfd). Garbage collection needs a registry that accepts no
writes: kiln restarts it read-only (pulls keep working), collects, and restarts it writable.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from kiln.errors import InvalidInput, PermanentFailure, RegistryUnavailable, TemporaryFailure
from kiln.registry.base import Credentials
from kiln.registry.client import RegistryClient

DEFAULT_BINARY = "/usr/bin/docker-registry"
_READY_TIMEOUT = 30.0
_POLL = 0.02
_PORT_FREE_TIMEOUT = 2.0  # a registry that just exited lets go of its port within this
_EXIT_POLL = 0.05


def _config_text(*, data_dir: Path, port: int, read_only: bool) -> str:
    # JSON is YAML: no quoting surprises in paths.
    return "\n".join(
        [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog: {disabled: true}",
            "storage:",
            f'  filesystem: {{rootdirectory: "{data_dir}"}}',
            "  delete: {enabled: true}",
            "  maintenance:",
            "    uploadpurging: {enabled: true, age: 168h, interval: 24h, dryrun: false}",
            f"    readonly: {{enabled: {'true' if read_only else 'false'}}}",
            "http:",
            f"  addr: 127.0.0.1:{port}",
            "  headers: {X-Content-Type-Options: [nosniff]}",
            "health:",
            "  storagedriver: {enabled: false}",
            "",
        ]
    )


# Below the kernel's ephemeral ports (32768-60999 by default): a port from that range can be
# any outgoing connection's local port at the moment the registry restarts (after a garbage
# collection, or when it died), and the bind then fails. Clear of the host-network instance
# ports too (kiln.drivers.docker.HOST_PORT_RANGE, 20000-29999).
PORT_RANGE = (30000, 32767)


def _free_port() -> int:
    for _ in range(100):
        port = random.randint(*PORT_RANGE)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise TemporaryFailure(f"no free port in {PORT_RANGE} for the embedded registry")


def _ours(pid: int, marker: str) -> psutil.Process | None:
    """The process ``pid`` if it runs, is not a zombie, and is the registry serving ``marker``
    (a config path): a recycled pid is never taken for ours. The ``psutil.Process`` remembers
    the start time of what it found, so later looks at it (still running? a signal) never
    reach a process that took the pid over since."""
    try:
        process = psutil.Process(pid)
        cmdline = process.cmdline()
        name = process.name()
    except psutil.Error:  # gone, a zombie, or not ours to look at
        return None
    if _exited(process):
        return None
    # An exiting process has no cmdline any more but may still hold its listening socket:
    # alive until it is gone (or a zombie), so a restart never races it for the port.
    if not cmdline:
        return process if name[:15] == Path(DEFAULT_BINARY).name[:15] else None
    return process if marker in cmdline else None


def _exited(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _until(
    condition: Callable[[], bool], *, interval: float, timeout: float = math.inf
) -> bool:
    """Poll ``condition`` (a process state: nothing to await on) until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True


class EmbeddedRegistry:
    embedded = True
    credentials: Credentials | None = None  # loopback only: nothing to log in to

    def __init__(self, root: Path, *, port: int | None = None, binary: str = DEFAULT_BINARY):
        self.root = root
        self.binary = binary
        self.data_dir = root / "data"
        self.config_path = root / "config.yml"
        self.pid_file = root / "registry.pid"
        self.log_path = root / "registry.log"
        self.port_file = root / "port"
        self.port = port if port is not None else self._remembered_port()
        self.host = f"127.0.0.1:{self.port}"
        self.client = RegistryClient(f"http://{self.host}")
        self._lock = asyncio.Lock()
        self._read_only = False

    def _remembered_port(self) -> int:
        with contextlib.suppress(OSError, ValueError):
            return int(self.port_file.read_text().strip())
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        port = _free_port()
        self.port_file.write_text(f"{port}\n")
        return port

    def pid(self) -> int | None:
        process = self._process()
        return process.pid if process is not None else None

    def _process(self) -> psutil.Process | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return _ours(pid, str(self.config_path))

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        async with self._lock:
            await self._start_locked()

    async def ensure_running(self) -> bool:
        """Start it when it does not run; True when it had to (the supervisor's question)."""
        async with self._lock:
            if self.pid() is not None:
                return False
            await self._start_locked()
            return True

    async def _start_locked(self) -> None:
        if self.pid() is not None:
            await self._wait_ready()
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir.mkdir(exist_ok=True)
        text = _config_text(data_dir=self.data_dir, port=self.port, read_only=self._read_only)
        self.config_path.write_text(text)
        if not os.access(self.binary, os.X_OK):
            raise PermanentFailure(
                f"{self.binary} is missing: apt-get install docker-registry, or set registry.url"
                " in the settings file to use another registry"
            )
        await self._until_port_free()
        # Double fork through sh: the registry is re-parented to init, never a zombie of kiln,
        # and keeps running (like NGINX) while kiln restarts.
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            '"$0" serve "$1" </dev/null >>"$2" 2>&1 & echo $! >"$3"',
            self.binary,
            str(self.config_path),
            str(self.log_path),
            str(self.pid_file),
            start_new_session=True,
            stdin=asyncio.subprocess.DEVNULL,
        )
        await proc.wait()
        await self._wait_ready()

    async def _until_port_free(self) -> None:
        """Wait (briefly) until the port can be bound as the registry binds it. A registry that
        just exited may hold its listening socket a moment longer: the kernel reports the
        process gone while its other threads still close its files."""
        deadline = time.monotonic() + _PORT_FREE_TIMEOUT
        while True:
            with socket.socket() as probe:
                # As the registry binds (Go sets SO_REUSEADDR): TIME_WAIT is no clash.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", self.port))
                    return
                except OSError as exc:
                    if time.monotonic() > deadline:
                        raise InvalidInput(
                            f"the embedded registry's port 127.0.0.1:{self.port} is taken by"
                            f" another process ({exc.strerror}); free it or set registry.port"
                            " in the settings file"
                        ) from exc
            await asyncio.sleep(_POLL)

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.pid() is None:
                break
            if await self.client.ping():
                return
            await asyncio.sleep(_POLL)
        raise RegistryUnavailable(
            f"the embedded registry did not answer on {self.host}: {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:]) or "(empty log)"

    async def is_running(self) -> bool:
        return self.pid() is not None and await self.client.ping()

    async def wait_exited(self) -> None:
        process = self._process()
        if process is None:
            return
        try:
            pidfd = os.pidfd_open(process.pid)
        except (AttributeError, OSError):
            pidfd = None
        if pidfd is None:
            await _until(lambda: _exited(process), interval=_EXIT_POLL)
            return
        try:
            if _exited(process):
                return  # it exited (and the pid may be reused) before the pidfd was opened
            loop = asyncio.get_running_loop()
            exited: asyncio.Future[None] = loop.create_future()

            def readable() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(pidfd, readable)
            try:
                await exited
            finally:
                loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)

    async def stop(self) -> None:
        async with self._lock:
            await self._stop_locked()

    async def _stop_locked(self) -> None:
        process = self._process()
        if process is None:
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(sig)  # never to a process that took the pid over
            if await _until(lambda: _exited(process), interval=_POLL, timeout=wait):
                break
        self.pid_file.unlink(missing_ok=True)

    # --- content ----------------------------------------------------------------------

    async def manifest_digest(self, repository: str, reference: str) -> str | None:
        return await self.client.manifest_digest(repository, reference)

    async def image_size(self, repository: str, digest: str) -> int | None:
        return await self.client.image_size(repository, digest)

    async def delete_manifest(self, repository: str, digest: str) -> bool:
        return await self.client.delete_manifest(repository, digest)

    async def garbage_collect(self) -> str:
        """Restart read-only (pulls keep working, pushes wait), collect, restart writable."""
        async with self._lock:
            self._read_only = True
            try:
                await self._stop_locked()
                await self._start_locked()
                proc = await asyncio.create_subprocess_exec(
                    self.binary,
                    "garbage-collect",
                    str(self.config_path),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                output, _ = await proc.communicate()
            finally:
                self._read_only = False
                await self._stop_locked()
                await self._start_locked()
        text = output.decode(errors="replace").strip()
        if proc.returncode != 0 and "Path not found: /docker/registry/v2/repositories" in text:
            return "the registry holds no images: nothing to collect"
        if proc.returncode != 0:
            raise PermanentFailure(f"registry garbage collection failed: {text[-500:]}")
        lines = [line for line in text.splitlines() if "eligible for deletion" in line]
        return lines[-1].strip() if lines else "nothing to collect"

    async def close(self) -> None:
        await self.client.close()
