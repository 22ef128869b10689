"""Bounded HTTP load clients for rollout scenarios: they count what a user would see.

Two kinds, as in the issue: one opens a new connection per request, the other keeps its
connections alive and never retries. Both stop at ``max_requests`` or ``max_seconds``.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class LoadReport:
    requests: int = 0
    failures: int = 0  # connection errors and non-2xx answers
    closed_by_server: int = 0  # keep-alive connections the server closed or reset
    bodies: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    first_seen: dict[str, float] = field(default_factory=dict)  # body marker → monotonic time
    last_seen: dict[str, float] = field(default_factory=dict)


class LoadClient:
    """Sends GETs to NGINX in a background thread until stopped (bounded in count and time)."""

    def __init__(
        self,
        *,
        port: int,
        host_header: str,
        keep_alive: bool,
        path: str = "/",
        max_requests: int = 20_000,
        max_seconds: float = 120.0,
        markers: tuple[str, ...] = (),
        rate: float | None = None,
    ) -> None:
        self.port = port
        self.host_header = host_header
        self.keep_alive = keep_alive
        self.path = path
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.markers = markers
        self.rate = rate  # requests per second; None sends as fast as answers come
        self.report = LoadReport()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoadClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadReport:
        self._stop.set()
        self._thread.join(timeout=self.max_seconds + 5)
        return self.report

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.report.requests < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self) -> None:
        started = time.monotonic()
        connection: http.client.HTTPConnection | None = None
        report = self.report
        next_at = started
        while (
            not self._stop.is_set()
            and report.requests < self.max_requests
            and time.monotonic() - started < self.max_seconds
        ):
            if self.rate:
                next_at += 1 / self.rate
                pause = next_at - time.monotonic()
                if pause > 0:
                    self._stop.wait(pause)
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            headers = {"Host": self.host_header}
            if not self.keep_alive:
                headers["Connection"] = "close"
            report.requests += 1
            try:
                connection.request("GET", self.path, headers=headers)
                response = connection.getresponse()
                body = response.read().decode(errors="replace")
                if not 200 <= response.status < 300:
                    report.failures += 1
                    report.errors[f"HTTP {response.status}: {body.strip()[:80]}"] += 1
                self._note(body)
                if not self.keep_alive or response.will_close:
                    if self.keep_alive:
                        report.closed_by_server += 1
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                report.failures += 1
                report.errors[type(exc).__name__] += 1
                if self.keep_alive and isinstance(
                    exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError
                ):
                    report.closed_by_server += 1
                if connection is not None:
                    connection.close()
                connection = None
        if connection is not None:
            connection.close()

    def _note(self, body: str) -> None:
        now = time.monotonic()
        for marker in self.markers:
            if marker in body:
                self.report.bodies[marker] += 1
                self.report.first_seen.setdefault(marker, now)
                self.report.last_seen[marker] = now
                return
        self.report.bodies["other"] += 1
