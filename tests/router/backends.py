"""Named Python HTTP backends for router tests (and anyone else's): each answers its own name.

    port, stop = start_backend("blue")
    ...                                  # GET http://127.0.0.1:{port}/anything -> b"blue"
    stop()                               # closes the listener and every open connection

    blue = serve_backend("blue")         # the same, with what it saw and a gate
    blue.port, blue.requests, blue.in_progress(), blue.release_held(), blue.stop()

The query string tells a backend how to misbehave; ``NAME`` restricts a directive to one backend
(``?status.green=503`` makes only green fail):

    sleep=SECONDS / sleep.NAME=SECONDS   answer after a while
    hold=1 / hold.NAME=1                 answer once the test calls release_held() (≤ 30 s)
    status=CODE / status.NAME=CODE       answer with this status
    close=1 / close.NAME=1               read the request, then close without answering

Tuned for NGINX in front: HTTP/1.1 keep-alive, a deep listen backlog (ThreadingHTTPServer's
default of 5 makes NGINX report upstream timeouts) and TCP_NODELAY on every accepted socket
(without it each response stalls ~40 ms on delayed ACKs).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_HOLD_LIMIT = 30.0


class _NamedServer(ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], name: str) -> None:
        self.name = name
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self.seen_lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # "METHOD /path" → requests received
        self.busy = 0  # requests received and not yet answered (or closed)
        self.gate = threading.Event()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._open_lock:
            self._open.add(conn)
        return conn, addr

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """A stopped backend must look dead to NGINX, also on its cached keep-alive connections."""
        with self._open_lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _NamedServer

    def _directive(self, query: dict[str, list[str]], name: str) -> str | None:
        values = query.get(f"{name}.{self.server.name}") or query.get(name)
        return values[0] if values else None

    def _answer(self, with_body: bool) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        server = self.server
        with server.seen_lock:
            server.requests[f"{self.command} {url.path}"] += 1
            server.busy += 1
        try:
            self._misbehave(query, with_body)
        finally:
            with server.seen_lock:
                server.busy -= 1

    def _misbehave(self, query: dict[str, list[str]], with_body: bool) -> None:
        sleep = self._directive(query, "sleep")
        if sleep:
            time.sleep(float(sleep))
        if self._directive(query, "hold"):
            self.server.gate.wait(_HOLD_LIMIT)
        if self._directive(query, "close"):
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        status = int(self._directive(query, "status") or 200)
        body = self.server.name.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", self.server.name)
        self.send_header("X-Seen-Host", self.headers.get("Host", ""))
        self.send_header("X-Seen-Forwarded-For", self.headers.get("X-Forwarded-For", ""))
        self.send_header("X-Seen-Forwarded-Proto", self.headers.get("X-Forwarded-Proto", ""))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(True)

    def do_POST(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: a load test would print thousands of lines


@dataclass
class Backend:
    """A running named backend: its port, what it saw, its gate for ``hold`` requests."""

    name: str
    port: int
    stop: Callable[[], None]
    _server: _NamedServer

    @property
    def requests(self) -> Counter[str]:
        """ "METHOD /path" → requests received so far (counted on arrival)."""
        with self._server.seen_lock:
            return Counter(self._server.requests)

    def in_progress(self) -> int:
        """Requests received and not answered yet."""
        with self._server.seen_lock:
            return self._server.busy

    def release_held(self) -> None:
        """Let every ``hold`` request (and every later one) answer."""
        self._server.gate.set()


def serve_backend(name: str, *, host: str = "127.0.0.1") -> Backend:
    """Serve ``name`` on a free port of ``host``; ``stop`` is idempotent."""
    server = _NamedServer((host, 0), name)
    thread = threading.Thread(target=server.serve_forever, name=f"backend-{name}", daemon=True)
    thread.start()
    stopped = threading.Event()

    def stop() -> None:
        if stopped.is_set():
            return
        stopped.set()
        server.gate.set()  # held requests end, or their threads would outlive the test
        server.shutdown()
        server.server_close()
        server.close_open_connections()
        thread.join(timeout=5)

    return Backend(name, int(server.server_address[1]), stop, server)


def start_backend(name: str, *, host: str = "127.0.0.1") -> tuple[int, Callable[[], None]]:
    """Serve ``name`` on a free port of ``host``; returns the port and an idempotent stop."""
    backend = serve_backend(name, host=host)
    return backend.port, backend.stop


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (for NGINX itself, or a peer that is down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
