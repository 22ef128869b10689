"""Small HTTP clients for the router scenarios (blocking; run them in a thread from async tests)."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from kiln.model import Peer


def peer(name: str, port: int, weight: int = 1, release: int = 0) -> Peer:
    return Peer(instance_id=name, host="127.0.0.1", port=port, weight=weight, release=release)


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    headers: dict[str, str]


def fetch(
    port: int,
    path: str = "/",
    *,
    host: str | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10,
) -> Answer:
    """One request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    sent = dict(headers or {})
    if host:
        sent["Host"] = host
    try:
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        body = response.read().decode()
        return Answer(response.status, body, dict(response.getheaders()))
    finally:
        conn.close()


def count_answers(
    port: int, requests: int, path: str = "/", *, headers: dict[str, str] | None = None
) -> Counter[str]:
    """``requests`` GETs on one keep-alive connection; counts bodies (and non-200 statuses)."""
    seen: Counter[str] = Counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(requests):
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            body = response.read().decode()
            seen[body if response.status == 200 else f"status {response.status}"] += 1
    finally:
        conn.close()
    return seen


@dataclass
class KeepAliveLoad:
    """A few persistent client connections sending GETs until stopped (bounded in count and time).

    ``failures`` counts errors and non-200 answers; ``reconnects`` counts every time a client
    connection was closed by the server (an error, or ``Connection: close``) or had to be
    reopened; ``answers`` counts bodies.
    """

    port: int
    connections: int = 4
    max_requests_each: int = 20_000
    max_seconds: float = 60.0
    failures: int = 0
    reconnects: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for i in range(self.connections):
            thread = threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def total(self) -> int:
        with self._lock:
            return sum(self.answers.values())

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.connect()
        local = conn.sock.getsockname() if conn.sock else None
        try:
            for _ in range(self.max_requests_each):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    conn.request("GET", "/")
                    response = conn.getresponse()
                    body = response.read().decode()
                except (OSError, http.client.HTTPException):
                    with self._lock:
                        self.failures += 1
                        self.reconnects += 1
                    conn.close()
                    continue
                now_local = conn.sock.getsockname() if conn.sock else None
                with self._lock:
                    self.answers[body] += 1
                    if response.status != 200:
                        self.failures += 1
                    if response.will_close or now_local != local:
                        self.reconnects += 1
                local = now_local
        finally:
            conn.close()
