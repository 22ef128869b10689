"""``NginxRouter``: runs kiln's private NGINX, swaps its config, pushes peer lists to it.

Files (``prefix`` is NGINX's ``-p`` dir, ``run_dir`` kiln's private 0700 runtime dir)::

    prefix/nginx.conf        the live config; nginx.conf.new while ``nginx -t`` checks a candidate
                             (to apply it, or only to answer ``check_routes``: then it goes)
    prefix/routes.json       the routes of the live config, re-rendered when NGINX is (re)started
    prefix/peers.json        every app's peers and traffic policy, written before each push;
                             init_by_lua reads it
    prefix/nginx.pid         the master's pid (how a restarted kiln adopts a running NGINX)
    prefix/lua/*.lua         copies of kiln/router/lua, so NGINX never depends on kiln's install
    prefix/logs/             error.log, access.log (JSON lines), nginx-start.log
    prefix/temp/             every *_temp_path
    run_dir/admin.sock       the admin endpoint (GET /status, GET/PUT/DELETE /peers,
                             GET /in_flight, GET /traffic)

NGINX is started daemonized (its own session, reparented away from kiln), so it keeps serving
when kiln stops or crashes. When the master runs as root, its workers run as root too
(``user root``): kiln's home is usually inside root's 0700 home directory, where an unprivileged
worker could not reach the temp dirs. The admin socket stays private because ``run_dir`` is 0700.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import os
import pwd
import re
import signal
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from kiln.errors import InvalidInput, RouterConfigRejected, RouterUnavailable
from kiln.model import AppKey, Peer, ReleaseTraffic, RouteEntry, TrafficPolicy
from kiln.router.render import render_nginx_conf

log = logging.getLogger(__name__)

LUA_SOURCE_DIR = Path(__file__).with_name("lua")
_MAX_UNIX_SOCKET_PATH = 107  # sun_path is 108 bytes including the trailing NUL
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_POLL = 0.02
_FAST_POLL = 0.005  # while NGINX restarts, every few ms count
_EXIT_POLL = 0.05  # how often wait_exited looks at the master where no pidfd is to be had
_ORPHAN_GRACE = 2.0  # how long orphaned workers may take to close their listeners
# The admin socket speaks plain HTTP. A bare TLS context spares httpx loading the CA bundle
# on every call (~100 ms, which would dominate each peer push).
_PLAIN_HTTP_ONLY = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


@dataclass(frozen=True, kw_only=True)
class AdminStatus:
    """What the admin endpoint's ``GET /status`` says, as seen by the worker that answered."""

    generation: int  # config loads by the master since start (1 = started, +1 per reload)
    worker_generation: int  # the config generation of the answering worker
    worker_pid: int
    peers_version: int  # bumped on every peer list change


class NginxRouter:
    """The ``Router`` protocol on a private NGINX with a Lua balancer."""

    def __init__(
        self,
        *,
        prefix: Path,
        listen_host: str,
        listen_port: int,
        run_dir: Path,
        nginx_binary: str = "nginx",
        ready_timeout: float = 10.0,
    ) -> None:
        self.prefix = prefix.absolute()
        self.run_dir = run_dir.absolute()
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.nginx_binary = nginx_binary
        self.ready_timeout = ready_timeout
        self.admin_socket = self.run_dir / "admin.sock"
        self.conf_path = self.prefix / "nginx.conf"
        self.peers_file = self.prefix / "peers.json"
        self.routes_file = self.prefix / "routes.json"
        self.pid_file = self.prefix / "nginx.pid"
        self.lua_dir = self.prefix / "lua"
        self.error_log = self.prefix / "logs" / "error.log"
        self.access_log = self.prefix / "logs" / "access.log"
        if len(os.fsencode(self.admin_socket)) > _MAX_UNIX_SOCKET_PATH:
            raise InvalidInput(
                f"the admin socket path {self.admin_socket} is longer than the "
                f"{_MAX_UNIX_SOCKET_PATH} bytes a unix socket allows; use a shorter run dir"
            )
        self._peers: dict[AppKey, _Entry] | None = None
        self._config_lock = asyncio.Lock()
        # Routes of a table that passed `nginx -t` and that NGINX loaded. A table within it
        # renders fewer servers and locations and nothing new, so NGINX accepts it as well: a
        # removal (a destroyed app, a route that went) skips the check (~0.2 s of a ~0.6 s apply
        # at 100 apps on the busy 2-core VM); a reload NGINX refuses anyway is still caught.
        self._checked: frozenset[RouteEntry] | None = None
        # The text of the last candidate check_routes saw pass `nginx -t`: when the controller
        # applies the table it narrowed down with checks, the apply need not run it again.
        self._passed: str | None = None
        # One peer change per app at a time (its file write and its push stay in order);
        # different apps change at once and share the file's writes (_persist_peers).
        self._app_locks: dict[AppKey, asyncio.Lock] = {}
        self._peers_write_lock = asyncio.Lock()
        self._peers_version = 0  # bumped on every change of the peer map in memory
        self._peers_written = 0  # the version peers.json holds
        self._entry_texts: dict[AppKey, tuple[_Entry, str]] = {}  # each app's part of the file
        # One admin client (and its keep-alive connection) per router and event loop.
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    # -- the Router protocol -------------------------------------------------------------

    async def start(self) -> None:
        async with self._config_lock:
            self._prepare_dirs()
            _install_lua(LUA_SOURCE_DIR, self.lua_dir)
            if self.master_pid() is not None:
                await self._wait_until_serving()  # adopt: it is ours and it runs
                return
            await self._retire_orphaned_workers()
            with contextlib.suppress(FileNotFoundError):
                self.admin_socket.unlink()  # left by a killed master; NGINX cannot bind over it
            await self._write_startup_config()
            await self._spawn()
            await self._wait_until_serving()

    async def wait_exited(self) -> None:
        """Return as soon as the NGINX master this router manages exits (at once if none runs).

        A pidfd (Linux ≥ 5.3) wakes the event loop the moment the master dies, though it is
        not kiln's child; elsewhere the master is polled every 50 ms. Cancel it to stop waiting.
        """
        master = self._master()
        if master is None:
            return
        try:
            pidfd = os.pidfd_open(master.pid)
        except (AttributeError, OSError):
            pidfd = None
        if pidfd is None:
            await _wait_until(lambda: _exited(master), math.inf, interval=_EXIT_POLL)
            return
        try:
            if _exited(master):
                return  # it died (and the pid may be reused) before the pidfd was opened
            loop = asyncio.get_running_loop()
            exited: asyncio.Future[None] = loop.create_future()

            def readable() -> None:
                if not exited.done():
                    exited.set_result(None)

            try:
                loop.add_reader(pidfd, readable)
            except NotImplementedError:  # an event loop without add_reader
                await _wait_until(lambda: _exited(master), math.inf, interval=_EXIT_POLL)
                return
            try:
                await exited
            finally:
                loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)

    async def is_running(self) -> bool:
        if self.master_pid() is None:
            return False
        try:
            await self.status(timeout=1.0)
        except RouterUnavailable:
            return False
        return True

    async def apply_routes(self, routes: Sequence[RouteEntry]) -> bool:
        async with self._config_lock:
            text = self._render(routes)
            old_text = _read_text(self.conf_path)
            # The writes fsync (~10 ms each on a busy VM): in a thread, so the rounds of every
            # app keep running while a table goes to disk.
            if text == old_text:
                if _read_text(self.routes_file) != _routes_json(routes).decode():
                    await asyncio.to_thread(_write_atomic, self.routes_file, _routes_json(routes))
                return False
            candidate = self.conf_path.with_name("nginx.conf.new")
            await asyncio.to_thread(self._stage, candidate, text.encode())
            wanted = frozenset(routes)
            within = self._checked is not None and wanted <= self._checked
            checked = within or text == self._passed
            self._passed = None
            problem = None if checked else await self._check_config(candidate)
            if problem is not None:
                candidate.unlink(missing_ok=True)
                raise RouterConfigRejected(
                    f"nginx -t rejected the new config; the old one keeps serving:\n{problem}"
                )
            old_routes = _read_text(self.routes_file)
            master = self._master()
            before = await self.status() if master is not None else None
            await asyncio.to_thread(_write_atomic, self.routes_file, _routes_json(routes))
            # No await from here to the signal: a cancelled apply never leaves a config in
            # place that NGINX did not load (the next apply of that table would skip it).
            os.replace(candidate, self.conf_path)
            log_offset = _file_size(self.error_log)
            if master is None or before is None or not _signal(master, signal.SIGHUP):
                raise RouterUnavailable(
                    "NGINX is not running; the new routes take effect when it starts"
                )
            if not await self._wait_for_generation_after(before.worker_generation):
                self._checked = None
                # NGINX kept its old config (a bind failure, say): put the old files back.
                if old_text is not None:
                    _write_atomic(self.conf_path, old_text.encode())
                if old_routes is not None:
                    _write_atomic(self.routes_file, old_routes.encode())
                raise RouterConfigRejected(
                    "NGINX did not load the new config; the old one keeps serving:\n"
                    + _emergencies(self.error_log, log_offset)
                )
            if not within:
                self._checked = wanted
            return True

    async def check_routes(self, routes: Sequence[RouteEntry]) -> str | None:
        """``nginx -t`` on the config for these routes, staged as the candidate an apply would
        swap in and removed again: the live nginx.conf, routes.json and what NGINX serves stay
        as they are, and nothing is reloaded. None when it passes (also the live config and a
        table within the last one loaded, as in ``apply_routes``), else why not."""
        try:
            text = self._render(routes)
        except InvalidInput as exc:
            return exc.message
        async with self._config_lock:
            if text == _read_text(self.conf_path):
                return None
            if self._checked is not None and frozenset(routes) <= self._checked:
                return None
            candidate = self.conf_path.with_name("nginx.conf.new")
            try:
                await asyncio.to_thread(self._stage, candidate, text.encode())
                problem = await self._check_config(candidate)
            finally:
                candidate.unlink(missing_ok=True)
            if problem is None:
                self._passed = text
            return problem

    async def set_peers(
        self, key: AppKey, peers: Sequence[Peer], policy: TrafficPolicy | None = None
    ) -> None:
        entry = _Entry(list(peers), policy)
        body = _entry_json(key, entry)
        path = _peers_path(key)
        async with self._app_lock(key):
            current = self._peer_map()
            before = current.get(key)
            if before != entry:
                # Persisted before the push: a NGINX restarted from here on serves this list.
                current[key] = entry
                self._peers_version += 1
                await self._persist_peers()
            response = await self._admin("PUT", path, json_body=body)
            if response.status_code == 400 and before != entry:
                # Refused: the file goes back to what NGINX still serves.
                if before is None:
                    del current[key]
                else:
                    current[key] = before
                self._peers_version += 1
                await self._persist_peers()
        if response.status_code == 400:
            raise InvalidInput(f"NGINX refused the peers of {key}: {_error_of(response)}")
        if response.status_code != 200:
            raise RouterUnavailable(
                f"NGINX's admin endpoint answered {response.status_code} to PUT {path}: "
                f"{_error_of(response)}"
            )

    async def get_peers(self) -> dict[AppKey, list[Peer]]:
        return {key: entry.peers for key, entry in (await self._get_entries()).items()}

    async def in_flight(self) -> dict[AppKey, dict[str, int]]:
        data = await self._admin_json("/in_flight")
        return {
            AppKey.parse(key): {str(instance): int(n) for instance, n in by_instance.items()}
            for key, by_instance in data.items()
        }

    async def traffic(self) -> dict[AppKey, dict[int, ReleaseTraffic]]:
        data = await self._admin_json("/traffic")
        bounds = [float(b) for b in data["bounds_ms"]] + [math.inf]
        result: dict[AppKey, dict[int, ReleaseTraffic]] = {}
        for key, by_release in data["apps"].items():
            result[AppKey.parse(key)] = {
                int(release): _release_traffic(bounds, counters)
                for release, counters in by_release.items()
            }
        return result

    def log_files(self) -> dict[str, Path]:
        return {"access": self.access_log, "error": self.error_log}

    async def reopen_logs(self) -> None:
        master = self._master()
        if master is not None:  # else it opens the files afresh when it starts
            _signal(master, signal.SIGUSR1)  # nginx -s reopen

    async def stop(self) -> None:
        async with self._config_lock:
            master = self._master()
            if master is not None:
                for sig, wait in ((signal.SIGQUIT, 10.0), (signal.SIGTERM, 5.0)):
                    _signal(master, sig)
                    if await _wait_until(lambda: _exited(master), wait):
                        break
                else:
                    _signal(master, signal.SIGKILL)
                    await _wait_until(lambda: _exited(master), 5.0)
            await self._stop_orphaned_workers()
        await self.close()

    async def close(self) -> None:
        """Close the admin connection (NGINX keeps serving; a later call opens a new one)."""
        client, self._client = self._client, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            await client.aclose()

    # -- extras for the controller and tests ---------------------------------------------

    async def forget_peers(self, key: AppKey) -> None:
        """Drop an app's peer list and counters (a destroyed app); its routes answer 503."""
        async with self._app_lock(key):
            current = self._peer_map()
            current.pop(key, None)
            self._peers_version += 1
            await self._persist_peers()
            response = await self._admin("DELETE", _peers_path(key))
            # The app is gone: its lock goes too (a later set_peers of the name makes a new one).
            self._app_locks.pop(key, None)
        if response.status_code != 200:
            raise RouterUnavailable(f"DELETE {_peers_path(key)} answered {response.status_code}")

    async def get_policies(self) -> dict[AppKey, TrafficPolicy | None]:
        """The traffic policy NGINX currently holds for each app (None: one pool)."""
        return {key: entry.policy for key, entry in (await self._get_entries()).items()}

    async def status(self, *, timeout: float = 2.0) -> AdminStatus:
        response = await self._admin("GET", "/status", timeout=timeout)
        if response.status_code != 200:
            raise RouterUnavailable(f"GET /status answered {response.status_code}")
        data = response.json()
        return AdminStatus(
            generation=int(data["generation"]),
            worker_generation=int(data["worker_generation"]),
            worker_pid=int(data["worker_pid"]),
            peers_version=int(data["peers_version"]),
        )

    def master_pid(self) -> int | None:
        """The pid in the pid file, if it is a live NGINX master started with our config."""
        master = self._master()
        return master.pid if master is not None else None

    def worker_pids(self) -> set[int]:
        """The master's live child processes: a reload replaces all of them."""
        master = self._master()
        if master is None:
            return set()
        with contextlib.suppress(psutil.Error):
            return {child.pid for child in master.children() if not _exited(child)}
        return set()  # the master exited meanwhile

    # -- internals -----------------------------------------------------------------------

    def _master(self) -> psutil.Process | None:
        """The live NGINX master started with our config, as the pid file names it.

        A ``psutil.Process`` remembers the start time of the process it found: a signal sent
        through it later, or a check that it still runs, never reaches a process that took
        over the pid after the master exited.
        """
        text = _read_text(self.pid_file)
        if text is None or not text.strip().isdigit():
            return None  # nginx -t leaves an empty pid file behind
        try:
            master = psutil.Process(int(text.strip()))
            words = " ".join(master.cmdline()).split()  # NGINX rewrites its argv: split again
        except psutil.Error:
            return None
        if _exited(master) or "master" not in words or str(self.conf_path) not in words:
            return None  # gone, or the pid was reused by another process
        return master

    def _render(self, routes: Sequence[RouteEntry]) -> str:
        return render_nginx_conf(
            routes,
            prefix=self.prefix,
            listen_host=self.listen_host,
            listen_port=self.listen_port,
            admin_socket=self.admin_socket,
            peers_file=self.peers_file,
            lua_dir=self.lua_dir,
            user=pwd.getpwuid(os.geteuid()).pw_name if os.geteuid() == 0 else None,
        )

    def _stage(self, candidate: Path, data: bytes) -> None:
        """The directories, the Lua modules and the candidate config, on disk (a thread)."""
        self._prepare_dirs()
        _install_lua(LUA_SOURCE_DIR, self.lua_dir)
        _write_atomic(candidate, data)

    def _prepare_dirs(self) -> None:
        for directory in (self.prefix, self.prefix / "logs", self.prefix / "temp", self.lua_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)

    def _peer_map(self) -> dict[AppKey, _Entry]:
        # Loaded from disk once, so a restarted kiln keeps the lists of apps it has not set yet.
        if self._peers is None:
            text = _read_text(self.peers_file)
            try:
                self._peers = _parse_entries(json.loads(text)) if text else {}
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable %s: %s", self.peers_file, exc)
                self._peers = {}
        return self._peers

    def _app_lock(self, key: AppKey) -> asyncio.Lock:
        lock = self._app_locks.get(key)
        if lock is None:
            lock = self._app_locks[key] = asyncio.Lock()
        return lock

    async def _persist_peers(self) -> None:
        """Return once peers.json holds the peer map as it is now, durably. Group commit: the
        changes several apps make while a write is under way go to disk together in the next
        one (one write and fsync, not one per app), and a caller whose change an earlier
        write already carried returns at once."""
        wanted = self._peers_version
        async with self._peers_write_lock:
            if self._peers_written >= wanted:
                return
            version = self._peers_version
            data = self._peers_file_bytes()
            await asyncio.to_thread(_write_atomic, self.peers_file, data)
            self._peers_written = max(self._peers_written, version)

    def _peers_file_bytes(self) -> bytes:
        """peers.json for the current map: one app per line, each app's line rendered once
        per change of its entry (100 apps: the file is rebuilt from cached lines)."""
        lines = []
        texts: dict[AppKey, tuple[_Entry, str]] = {}
        for key, entry in sorted(self._peer_map().items()):
            cached = self._entry_texts.get(key)
            if cached is None or cached[0] is not entry:
                cached = (entry, json.dumps(str(key)) + ": " + json.dumps(_entry_json(key, entry)))
            texts[key] = cached
            lines.append(cached[1])
        self._entry_texts = texts
        return ("{\n" + ",\n".join(lines) + "\n}\n").encode()

    def _saved_routes(self) -> list[RouteEntry]:
        text = _read_text(self.routes_file)
        if not text:
            return []
        try:
            return [
                RouteEntry(
                    host=r["host"],
                    path=r["path"],
                    key=AppKey.parse(r["key"]),
                    preview=bool(r.get("preview", False)),
                )
                for r in json.loads(text)
            ]
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable %s: %s", self.routes_file, exc)
            return []

    async def _write_startup_config(self) -> None:
        """Render the last applied routes with today's settings; keep the old file if rejected."""
        try:
            text = self._render(self._saved_routes())
        except InvalidInput as exc:
            log.warning("the saved routes no longer render (%s); starting with none", exc)
            text = self._render([])
        if text == _read_text(self.conf_path):
            return
        candidate = self.conf_path.with_name("nginx.conf.new")
        _write_atomic(candidate, text.encode())
        problem = await self._check_config(candidate)
        if problem is None:
            os.replace(candidate, self.conf_path)
            return
        candidate.unlink(missing_ok=True)
        if not self.conf_path.exists():
            raise RouterConfigRejected(f"nginx -t rejected the startup config:\n{problem}")
        log.warning("nginx -t rejected a fresh render, starting with the last good config")

    async def _check_config(self, path: Path) -> str | None:
        """``nginx -t`` on ``path``: None when it passes, else NGINX's own words."""
        code, output = await self._run_nginx("-t", "-c", str(path))
        if code == 0:
            return None
        lines = [line for line in output.splitlines() if "[emerg]" in line or "[error]" in line]
        return "\n".join(lines) or output.strip()

    async def _run_nginx(self, *args: str) -> tuple[int, str]:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.nginx_binary,
                "-p",
                str(self.prefix),
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise RouterUnavailable(f"cannot run {self.nginx_binary}: {exc}") from exc
        output, _ = await proc.communicate()
        return proc.returncode or 0, output.decode(errors="replace")

    async def _spawn(self) -> None:
        """Start NGINX daemonized: its foreground process exits once the listeners are bound."""
        start_log = self.prefix / "logs" / "nginx-start.log"
        # A file, not a pipe: the daemon inherits the stream and would hold a pipe open.
        with start_log.open("wb") as err:
            try:
                proc = await asyncio.create_subprocess_exec(
                    self.nginx_binary,
                    "-p",
                    str(self.prefix),
                    "-c",
                    str(self.conf_path),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                    start_new_session=True,
                )
            except OSError as exc:
                raise RouterUnavailable(f"cannot run {self.nginx_binary}: {exc}") from exc
            code = await proc.wait()
        if code != 0:
            output = start_log.read_text(errors="replace").strip()
            raise RouterUnavailable(f"NGINX did not start (exit {code}):\n{output}")

    async def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.master_pid() is not None:
                try:
                    await self.status(timeout=1.0)
                    return
                except RouterUnavailable as exc:
                    last_error = exc
            await asyncio.sleep(_FAST_POLL)
        raise RouterUnavailable(
            f"NGINX (prefix {self.prefix}) did not answer on {self.admin_socket} within "
            f"{self.ready_timeout}s: {last_error}"
        )

    async def _wait_for_generation_after(self, generation: int) -> bool:
        """True once a worker of a newer config answers: the reload is live."""
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(RouterUnavailable):
                if (await self.status(timeout=1.0)).worker_generation > generation:
                    return True
            await asyncio.sleep(_POLL)
        return False

    async def _retire_orphaned_workers(self) -> None:
        """Free the listen port held by workers of a killed master, without waiting for them.

        SIGQUIT makes a worker close its listeners at once and finish the requests it serves
        (they complete, rather than being cut); only one still listening after a while is killed.
        """
        orphans = self._orphaned_workers()
        if not orphans:
            return
        log.warning("retiring workers %s left by a dead NGINX master", _pids(orphans))
        for worker in orphans:
            _signal(worker, signal.SIGQUIT)

        def port_free() -> bool:
            return not _port_taken(self.listen_host, self.listen_port)

        if await _wait_until(port_free, _ORPHAN_GRACE, interval=_FAST_POLL):
            return
        for worker in orphans:
            _signal(worker, signal.SIGKILL)
        await _wait_until(lambda: all(_exited(worker) for worker in orphans), 5.0)

    async def _stop_orphaned_workers(self) -> None:
        """Workers of a killed master keep the listen sockets; only they know our log files."""
        orphans = self._orphaned_workers()
        if not orphans:
            return
        log.warning("stopping workers %s left by a dead NGINX master", _pids(orphans))
        for worker in orphans:
            _signal(worker, signal.SIGQUIT)
        if not await _wait_until(lambda: all(_exited(worker) for worker in orphans), 5.0):
            for worker in orphans:
                _signal(worker, signal.SIGKILL)
            await _wait_until(lambda: all(_exited(worker) for worker in orphans), 5.0)

    def _orphaned_workers(self) -> list[psutil.Process]:
        """NGINX processes with our log files open: workers of a master that was killed."""
        logs = f"{self.prefix / 'logs'}/"
        found = []
        for process in psutil.process_iter(["cmdline"]):
            if not " ".join(process.info["cmdline"] or ()).startswith("nginx:"):
                continue
            with contextlib.suppress(psutil.Error):
                if not _exited(process) and any(
                    opened.path.startswith(logs) for opened in process.open_files()
                ):
                    found.append(process)
        return found

    async def _get_entries(self) -> dict[AppKey, _Entry]:
        return _parse_entries(await self._admin_json("/peers"))

    async def _admin_json(self, path: str) -> Any:
        response = await self._admin("GET", path)
        if response.status_code != 200:
            raise RouterUnavailable(f"GET {path} answered {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise RouterUnavailable(f"GET {path} answered with no JSON: {exc}") from exc

    def _admin_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # A client's pooled connections belong to the event loop that opened them.
            transport = httpx.AsyncHTTPTransport(
                uds=str(self.admin_socket), verify=_PLAIN_HTTP_ONLY
            )
            self._client = httpx.AsyncClient(transport=transport, base_url="http://kiln-admin")
            self._client_loop = loop
        return self._client

    async def _admin(
        self, method: str, path: str, *, json_body: Any = None, timeout: float = 2.0
    ) -> httpx.Response:
        # Every admin call is idempotent (GET, or PUT/DELETE of a whole list), so one that met
        # a kept-alive connection NGINX had just closed (a reload, a restart) is sent again.
        try:
            return await self._admin_client().request(method, path, json=json_body, timeout=timeout)
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            pass
        except httpx.HTTPError as exc:
            raise self._unavailable(method, path, exc) from exc
        try:
            return await self._admin_client().request(method, path, json=json_body, timeout=timeout)
        except httpx.HTTPError as exc:
            raise self._unavailable(method, path, exc) from exc

    def _unavailable(self, method: str, path: str, exc: httpx.HTTPError) -> RouterUnavailable:
        return RouterUnavailable(
            f"NGINX's admin socket {self.admin_socket} does not answer {method} {path}: {exc!r}"
        )


# -- peers as JSON ---------------------------------------------------------------------------


def _peers_path(key: AppKey) -> str:
    if not (_NAME.match(key.environment) and _NAME.match(key.app)):
        raise InvalidInput(f"{key} is not ENV/APP with lowercase names (a-z, 0-9, -)")
    return f"/peers/{key.environment}/{key.app}"


@dataclass(frozen=True)
class _Entry:
    """One app's peers and traffic policy, as NGINX holds them and peers.json keeps them."""

    peers: list[Peer]
    policy: TrafficPolicy | None


def _peer_json(key: AppKey, peer: Peer) -> dict[str, Any]:
    problem = None
    try:
        ipaddress.ip_address(peer.host)
    except ValueError:
        problem = f"host {peer.host!r} is not an IP address (NGINX's balancer takes no names)"
    if not 1 <= peer.port <= 65535:
        problem = f"port {peer.port} is not 1..65535"
    if peer.weight < 0:
        problem = f"weight {peer.weight} is negative"
    if peer.release < 0:
        problem = f"release {peer.release} is negative"
    if not peer.instance_id:
        problem = "the instance id is empty"
    if problem is not None:
        raise InvalidInput(f"peer {peer.instance_id!r} of {key}: {problem}")
    return {
        "id": peer.instance_id,
        "host": peer.host,
        "port": peer.port,
        "weight": peer.weight,
        "release": peer.release,
    }


def _policy_json(key: AppKey, policy: TrafficPolicy | None) -> dict[str, Any] | None:
    if policy is None:
        return None
    problem = None
    releases = [release for release, _ in policy.shares]
    if len(set(releases)) != len(releases):
        problem = f"shares {policy.shares} name a release twice"
    if any(release < 0 for release in releases):
        problem = f"shares {policy.shares} name a negative release"
    if any(share > 100 for _, share in policy.shares):
        problem = f"shares {policy.shares} give a release more than 100 percent"
    for role, release in (("canary", policy.canary), ("preview", policy.preview)):
        if release is not None and release < 1:
            problem = f"the {role} release must be ≥ 1, got {release}"
    if problem is not None:
        raise InvalidInput(f"traffic policy of {key}: {problem}")
    return {
        "shares": [[release, share] for release, share in policy.shares],
        "canary": policy.canary,
        "preview": policy.preview,
    }


def _entry_json(key: AppKey, entry: _Entry) -> dict[str, Any]:
    return {
        "peers": [_peer_json(key, p) for p in entry.peers],
        "policy": _policy_json(key, entry.policy),
    }


def _parse_entries(data: dict[str, Any]) -> dict[AppKey, _Entry]:
    """peers.json or GET /peers; an entry may be a bare peer list (written before policies)."""
    entries = {}
    for key, value in data.items():
        if isinstance(value, list):
            raw_peers, raw_policy = value, None
        else:
            raw_peers, raw_policy = value["peers"], value.get("policy")
        peers = [
            Peer(
                instance_id=p["id"],
                host=p["host"],
                port=int(p["port"]),
                weight=int(p.get("weight", 1)),
                release=int(p.get("release") or 0),
            )
            for p in raw_peers
        ]
        entries[AppKey.parse(key)] = _Entry(peers, _parse_policy(raw_policy))
    return entries


def _parse_policy(data: dict[str, Any] | None) -> TrafficPolicy | None:
    if not data:
        return None
    policy = TrafficPolicy(
        shares=tuple((int(r), int(s)) for r, s in data.get("shares") or ()),
        canary=data.get("canary"),
        preview=data.get("preview"),
    )
    return None if policy == TrafficPolicy() else policy


def _release_traffic(bounds: list[float], counters: dict[str, Any]) -> ReleaseTraffic:
    cumulative, running = [], 0
    for bound, count in zip(bounds, counters["buckets"], strict=True):
        running += int(count)
        cumulative.append((bound, running))
    return ReleaseTraffic(
        requests=int(counters["requests"]),
        errors=int(counters["errors"]),
        latency_buckets=tuple(cumulative),
    )


def _routes_json(routes: Sequence[RouteEntry]) -> bytes:
    data = [
        {"host": r.host, "path": r.path, "key": str(r.key), "preview": r.preview} for r in routes
    ]
    return (json.dumps(data, indent=1) + "\n").encode()


def _error_of(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text.strip()


# -- files and processes ---------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a torn one, even after a power cut."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _install_lua(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.glob("*.lua")):
        data = file.read_bytes()
        dest = target / file.name
        if not dest.exists() or dest.read_bytes() != data:
            _write_atomic(dest, data)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _emergencies(error_log: Path, offset: int) -> str:
    try:
        with error_log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no error log)"
    lines = [line for line in text.splitlines() if "[emerg]" in line or "[alert]" in line]
    return "\n".join(lines[-10:]) or "(nothing in the error log)"


def _exited(process: psutil.Process) -> bool:
    """Gone, its pid taken by another process, or a zombie: a daemonized master is reparented
    to an init that may never reap it."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _signal(process: psutil.Process, sig: signal.Signals) -> bool:
    """Whether ``sig`` was sent; psutil refuses (NoSuchProcess) when the pid now names a
    process other than the one found."""
    try:
        process.send_signal(sig)
    except psutil.NoSuchProcess:
        return False
    return True


def _pids(processes: Sequence[psutil.Process]) -> list[int]:
    return sorted(process.pid for process in processes)


def _port_taken(host: str, port: int) -> bool:
    """Whether a socket listens on ``host``:``port``: a trial bind, as NGINX's own would go.

    SO_REUSEADDR lets the bind pass over connections in TIME_WAIT, as NGINX's does, so only a
    listener makes it fail. (Reading /proc/net/tcp instead takes ~0.2 s with 10,000 sockets.)
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


async def _wait_until(
    condition: Callable[[], bool], timeout: float, *, interval: float = _POLL
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(interval)
    return bool(condition())
