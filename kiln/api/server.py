"""The kiln server process: ``python -m kiln.api.server`` (what the supervisor, systemd or
``kiln up --foreground`` runs).

    claim, before anything starts (every clash reported at once → exit 7, nothing left behind):
        lock run/kiln.pid (this home) ─▶ bind the API's unix socket (0600, stale file replaced)
        ─▶ bind TCP (only with KILN_API_TCP=1) ─▶ NGINX's port free, or held by our own NGINX?
    heartbeat task ─▶ token ─▶ open_engine + start ─▶ uvicorn on the socket(s) ─▶ READY=1, "serving"
    SIGTERM / SIGINT / POST /v1/shutdown ─▶ STOPPING=1 ─▶ stop accepting ─▶ engine.close()
                                         ─▶ release the claim (socket file, pid file)

The heartbeat task beats every second from the event loop (``kiln.supervisor.liveness``): the
supervisor restarts a server that goes silent, systemd one that stops sending WATCHDOG=1.
Stopping the server never stops NGINX or the apps: the data plane does not depend on it, and a
restarted server adopts what runs, so killing it at any moment is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from kiln.api.app import create_app
from kiln.api.auth import load_or_create_token
from kiln.api.peer import PeerCredentialsProtocol
from kiln.background import stop_tasks
from kiln.config import Settings, make_state_private, read_or_create_installation_id
from kiln.config.file import TlsSettings
from kiln.errors import InvalidInput, KilnError
from kiln.logs.structured import use_json_lines
from kiln.router.nginx import NginxRouter
from kiln.store.access import SqliteAccessStore
from kiln.store.aio import AsyncAccessStore, guard_from_env
from kiln.supervisor.exits import ServerExit
from kiln.supervisor.liveness import SERVING, Heartbeat, SystemdNotifier
from kiln.supervisor.pidfile import AlreadyHeld, PidFile
from kiln.supervisor.ports import (
    describe_pids,
    tcp_listeners,
    tcp_port_is_free,
    unix_socket_state,
)

log = logging.getLogger("kiln.server")

GRACEFUL_SECONDS = 3.0  # open event/log streams get this long before they are cut
BEAT_SECONDS = 1.0
BACKLOG = 2048
_MAX_UNIX_SOCKET_PATH = 107  # sun_path is 108 bytes including the trailing NUL


class PortInUse(Exception):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            f"the API's TCP port {host}:{port} is in use (another kiln, or another program); "
            f"stop it, or pick another port with KILN_API_PORT"
        )


class Clash(Exception):
    """Something else holds what this server needs; nothing was started."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(f"  - {problem}" for problem in self.problems))


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts so a busy port fails fast."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port) from exc
        raise
    sock.set_inheritable(False)
    return sock


def bind_unix_socket(path: Path) -> socket.socket:
    """The API's unix socket at ``path``, mode 0600, listening at once.

    A socket file nobody listens on is what a killed server leaves: it is replaced. A socket
    something listens on is another server's: ``Clash``. Listening at once (not when uvicorn
    starts) matters: a bound socket that refuses connections looks stale to a second server.
    """
    if len(os.fsencode(path)) > _MAX_UNIX_SOCKET_PATH:
        raise InvalidInput(
            f"the API socket path {path} is longer than the {_MAX_UNIX_SOCKET_PATH} bytes a "
            f"unix socket allows; set KILN_API_SOCKET (or KILN_HOME) to a shorter path"
        )
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    state = unix_socket_state(path)
    if state == "live":
        raise Clash(
            [
                f"the API socket {path} is in use by another kiln server (a kiln of another "
                f"KILN_HOME with the same KILN_API_SOCKET?) or another program; stop it, or "
                f"set KILN_API_SOCKET to another path"
            ]
        )
    if state == "not-a-socket":
        raise Clash([f"{path} exists and is not a socket; move it away, or set KILN_API_SOCKET"])
    if state == "stale":
        log.info("replacing the API socket %s left by a server that is gone", path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:  # another server bound it since our look
            raise Clash([f"the API socket {path} was just taken by another process"]) from exc
        raise
    sock.set_inheritable(False)
    return sock


def nginx_port_problem(settings: Settings) -> str | None:
    """Why NGINX could not listen on KILN_HTTP_HOST:KILN_HTTP_PORT, or None: the port is free,
    or our own NGINX (this home's, which the engine adopts) holds it."""
    host, port = settings.http_host, settings.http_port
    if tcp_port_is_free(host, port):
        return None
    router = NginxRouter(
        prefix=settings.nginx_dir,
        listen_host=host,
        listen_port=port,
        run_dir=settings.run_dir,
        nginx_binary=settings.nginx_binary,
    )
    master = router.master_pid()
    ours = router.worker_pids() | ({master} if master is not None else set())
    holders = tcp_listeners(port)
    if master is not None and (not holders or holders & ours):
        return None
    who = describe_pids(holders - ours) or "another program"
    return (
        f"NGINX's port {host}:{port} is in use by {who}; stop it, or set KILN_HTTP_PORT "
        f"to a free port"
    )


@dataclass
class Claim:
    """What a server holds exclusively while it runs."""

    pid_file: PidFile
    unix_path: Path
    unix_socket: socket.socket
    tcp_socket: socket.socket | None = None
    unix_id: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the socket file we bound

    @property
    def sockets(self) -> list[socket.socket]:
        return [self.unix_socket] + ([self.tcp_socket] if self.tcp_socket else [])

    def release(self) -> None:
        for sock in self.sockets:
            sock.close()
        # Only our own socket file: after a clash with a newer server, that one's stays.
        with contextlib.suppress(OSError):
            info = os.lstat(self.unix_path)
            if (info.st_dev, info.st_ino) == self.unix_id:
                self.unix_path.unlink()
        self.pid_file.release()


def claim(settings: Settings) -> Claim:
    """Take this home, the API's socket(s) and check NGINX's port; ``Clash`` lists every
    problem and leaves nothing behind."""
    settings.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(settings.run_dir, 0o700)
    pid_file = PidFile(settings.server_pid_path)
    try:
        pid_file.acquire()
    except AlreadyHeld as exc:
        raise Clash(
            [
                f"kiln is already running for KILN_HOME={settings.home} (server pid "
                f"{exc.pid or 'unknown'}); `kiln down` stops it"
            ]
        ) from None
    problems: list[str] = []
    unix: socket.socket | None = None
    tcp: socket.socket | None = None
    try:
        try:
            unix = bind_unix_socket(settings.api_socket_path)
        except Clash as exc:
            problems += exc.problems
        if settings.api_tcp:
            try:
                tcp = bind_socket(settings.api_host, settings.api_port)
            except PortInUse as exc:
                problems.append(str(exc))
        if problem := nginx_port_problem(settings):
            problems.append(problem)
    except BaseException:
        _release_partial(pid_file, settings.api_socket_path, unix, tcp)
        raise
    if problems or unix is None:
        _release_partial(pid_file, settings.api_socket_path, unix, tcp)
        raise Clash(problems)
    info = os.lstat(settings.api_socket_path)
    return Claim(
        pid_file=pid_file,
        unix_path=settings.api_socket_path,
        unix_socket=unix,
        tcp_socket=tcp,
        unix_id=(info.st_dev, info.st_ino),
    )


def _release_partial(
    pid_file: PidFile, unix_path: Path, unix: socket.socket | None, tcp: socket.socket | None
) -> None:
    if tcp is not None:
        tcp.close()
    if unix is not None:
        unix.close()
        with contextlib.suppress(FileNotFoundError):
            unix_path.unlink()
    pid_file.release()


class _Server(uvicorn.Server):
    on_started: Callable[[], None] | None = None

    # uvicorn installs its own SIGINT/SIGTERM handlers and re-raises the signal after
    # serving, which would kill the process before the engine stops and the pid file goes.
    # The caller owns signals instead.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None:
            self.on_started()


def check_tls(tls: TlsSettings) -> None:
    """``InvalidInput`` naming the problem when the certificate and key cannot be used."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile=tls.cert, keyfile=tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(
            f"the settings file's api.tls cannot be used: certificate {tls.cert}, key "
            f"{tls.key}: {exc}. Give a PEM certificate and its unencrypted PEM key"
        ) from exc


async def serve(
    app: FastAPI,
    sock: socket.socket,
    stop: asyncio.Event,
    *,
    more_sockets: Sequence[socket.socket] = (),
    on_started: Callable[[], None] | None = None,
    tls: TlsSettings | None = None,
) -> None:
    """Serve ``app`` on ``sock`` (and ``more_sockets``) until ``stop`` is set, then stop
    accepting and drain. ``on_started`` runs once every socket accepts requests. With ``tls``
    the ``more_sockets`` (TCP) speak HTTPS; ``sock`` (the unix socket) stays plain, so they
    are two uvicorn servers over the one app."""

    def config(**extra: Any) -> uvicorn.Config:
        return uvicorn.Config(
            app,
            log_level="warning",
            timeout_graceful_shutdown=int(GRACEFUL_SECONDS),
            backlog=BACKLOG,
            # Requests on the unix socket carry the kernel's word on who connected.
            http=PeerCredentialsProtocol,
            **extra,
        )

    plain_sockets = [sock, *more_sockets] if tls is None else [sock]
    servers: list[tuple[_Server, list[socket.socket]]] = [
        (_Server(config(lifespan="on")), plain_sockets)
    ]
    if tls is not None and more_sockets:
        secure = config(lifespan="off", ssl_certfile=str(tls.cert), ssl_keyfile=str(tls.key))
        servers.append((_Server(secure), list(more_sockets)))
    started: list[_Server] = []

    def one_started(server: _Server) -> None:
        started.append(server)
        if len(started) == len(servers) and on_started is not None:
            on_started()

    for server, _ in servers:
        server.on_started = functools.partial(one_started, server)

    async def stop_when_asked() -> None:
        await stop.wait()
        for server, _ in servers:
            server.should_exit = True

    watcher = asyncio.create_task(stop_when_asked())
    try:
        await asyncio.gather(*(server.serve(sockets=socks) for server, socks in servers))
    finally:
        await stop_tasks(watcher)


async def run(settings: Settings) -> int:
    try:
        if settings.file.api.tls is not None:
            check_tls(settings.file.api.tls)  # before anything is claimed or started
        held = claim(settings)
    except Clash as exc:
        log.error("kiln cannot start:\n%s", exc)
        return ServerExit.CONFLICT
    except InvalidInput as exc:
        log.error("kiln cannot start: %s", exc.message)
        return ServerExit.BAD_CONFIG
    try:
        return await _run_engine(settings, held)
    except InvalidInput as exc:
        # A setting or a file kiln refuses (a token others can read): restarting cannot help.
        log.error("kiln cannot start: %s", exc.message)
        return ServerExit.BAD_CONFIG
    finally:
        held.release()


async def _beat(heartbeat: Heartbeat, notifier: SystemdNotifier) -> None:
    while True:
        heartbeat.beat()
        notifier.watchdog()
        await asyncio.sleep(BEAT_SECONDS)


async def _run_engine(settings: Settings, held: Claim) -> int:
    # Imported here: the engine pulls in the driver, store and router, which the API's
    # tests (and `kiln --help`) never need.
    from kiln.controller.root import open_engine

    notifier = SystemdNotifier()
    heartbeat = Heartbeat(settings.heartbeat_path)
    beating = asyncio.create_task(_beat(heartbeat, notifier), name="heartbeat")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        token = load_or_create_token(settings.token_path)
        make_state_private(settings)
        engine = await open_engine(settings)
        access = AsyncAccessStore(
            SqliteAccessStore(settings.db_path, audit=settings.file.audit), guard=guard_from_env()
        )

        async def stop_on_shutdown_request() -> None:
            await engine.shutdown_requested.wait()
            log.info("shutdown requested through the API")
            stop.set()

        def serving() -> None:
            heartbeat.beat(SERVING)
            notifier.ready()
            log.info("kiln serving the API on %s (pid %d)", _where(settings), os.getpid())

        shutdown_watch = asyncio.create_task(stop_on_shutdown_request())
        try:
            await engine.start()
            await serve(
                create_app(
                    engine,
                    token=token,
                    installation_id=read_or_create_installation_id(settings),
                    access=access,
                ),
                held.unix_socket,
                stop,
                more_sockets=held.sockets[1:],
                on_started=serving,
                tls=settings.file.api.tls,
            )
        finally:
            notifier.stopping()
            shutdown_watch.cancel()
            log.info("stopping the engine (NGINX and the apps keep serving)")
            await engine.close()
            await access.close()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await stop_tasks(beating)
        heartbeat.close()
    log.info("kiln stopped")
    return ServerExit.OK


def _where(settings: Settings) -> str:
    where = f"unix socket {settings.api_socket_path}"
    if settings.api_tcp:
        where += f" and {settings.api_url}"
    return where


def configure_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if os.environ.get("KILN_DEBUG") == "1" else logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    # httpx logs every request at INFO: kiln asks NGINX's admin socket every second.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if os.environ.get("KILN_LOG_FORMAT") == "json":
        use_json_lines()


def _loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop unless KILN_EVENT_LOOP=asyncio: at 100 apps of 3 instances the loop's own work
    (timers, socket readiness, task steps for ~300 probes a second) is a large part of kiln's
    idle CPU, and uvloop does it in C (bench/probes.py: a probe's CPU 0.27 → 0.18 ms)."""
    if settings.event_loop == "asyncio":
        return None
    import uvloop

    return uvloop.new_event_loop


def main() -> None:
    # Everything the server creates (kiln.db and its WAL/SHM files, logs, sockets, NGINX's
    # files) is for its owner only.
    os.umask(0o077)
    configure_logging()
    try:
        settings = Settings.from_env()
    except KilnError as exc:
        log.error("%s", exc.message)
        sys.exit(ServerExit.BAD_CONFIG)
    if settings.file.logs.format == "json":
        use_json_lines()
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings)) as runner:
            code = runner.run(run(settings))
    except KilnError as exc:
        log.error("kiln could not start: %s", exc.message)
        code = ServerExit.FAILED
    except Exception:
        log.exception("kiln stopped on an unexpected error")
        code = ServerExit.FAILED
    sys.exit(code)


if __name__ == "__main__":
    main()
