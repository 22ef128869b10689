"""The kiln server process: ``python -m kiln.api.server`` (what ``kiln up`` starts).

    bind the API port ─▶ pid file ─▶ token ─▶ open_engine + start ─▶ uvicorn
         (in use → exit 5)                                         │
    SIGTERM / SIGINT / POST /v1/shutdown ─▶ stop accepting ─▶ engine.stop() ─▶ remove pid file

Stopping the server never stops NGINX or the apps: the data plane does not depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from kiln.api.app import create_app
from kiln.api.auth import load_or_create_token
from kiln.config import Settings
from kiln.errors import KilnError

log = logging.getLogger("kiln.server")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2
EXIT_PORT_IN_USE = 5
GRACEFUL_SECONDS = 3.0  # open event/log streams get this long before they are cut


class PortInUse(Exception):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            f"cannot listen on {host}:{port}: the port is in use (another kiln, or another "
            f"program). Stop it, or pick another port with KILN_API_PORT."
        )


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


class _Server(uvicorn.Server):
    # uvicorn installs its own SIGINT/SIGTERM handlers and re-raises the signal after
    # serving, which would kill the process before the engine stops and the pid file goes.
    # The caller owns signals instead.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(app: FastAPI, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve ``app`` on ``sock`` until ``stop`` is set, then stop accepting and drain."""
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=int(GRACEFUL_SECONDS),
    )
    server = _Server(config)

    async def stop_when_asked() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.create_task(stop_when_asked())
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def write_pid_file(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{os.getpid()}\n", encoding="utf-8")
    os.replace(tmp, path)


def remove_pid_file(path: Path) -> None:
    # Only our own: a second server that failed to start must not delete the first one's.
    with contextlib.suppress(FileNotFoundError, ValueError):
        if int(path.read_text(encoding="utf-8").strip()) == os.getpid():
            path.unlink()


async def run(settings: Settings) -> int:
    try:
        sock = bind_socket(settings.api_host, settings.api_port)
    except PortInUse as exc:
        log.error("%s", exc)
        return EXIT_PORT_IN_USE
    write_pid_file(settings.server_pid_path)
    try:
        return await _run_engine(settings, sock)
    finally:
        sock.close()
        remove_pid_file(settings.server_pid_path)


async def _run_engine(settings: Settings, sock: socket.socket) -> int:
    # Imported here: the engine pulls in the driver, store and router, which the API's
    # tests (and `kiln --help`) never need.
    from kiln.controller.root import open_engine

    token = load_or_create_token(settings.token_path)
    engine = await open_engine(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async def stop_on_shutdown_request() -> None:
        await engine.shutdown_requested.wait()
        log.info("shutdown requested through the API")
        stop.set()

    shutdown_watch = asyncio.create_task(stop_on_shutdown_request())
    try:
        await engine.start()
        log.info("kiln listening on %s (pid %d)", settings.api_url, os.getpid())
        await serve(create_app(engine, token=token), sock, stop)
    finally:
        shutdown_watch.cancel()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        log.info("stopping the engine (NGINX and the apps keep serving)")
        await engine.close()
    log.info("kiln stopped")
    return EXIT_OK


def configure_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if os.environ.get("KILN_DEBUG") == "1" else logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )


def main() -> None:
    configure_logging()
    try:
        settings = Settings.from_env()
    except KilnError as exc:
        log.error("%s", exc.message)
        sys.exit(EXIT_BAD_CONFIG)
    try:
        code = asyncio.run(run(settings))
    except KilnError as exc:
        log.error("kiln could not start: %s", exc.message)
        code = EXIT_FAILED
    except Exception:
        log.exception("kiln stopped on an unexpected error")
        code = EXIT_FAILED
    sys.exit(code)


if __name__ == "__main__":
    main()
