"""``Squatter``: not kiln, but listening where kiln's TCP API would be (as an app on the host
network might), remembering every header it is sent, so a test can show it never got a token."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Squatter:
    """Not kiln: an HTTP server on a loopback port that answers everything and remembers every
    header it was sent. ``mimic`` makes it answer /v1/identify in kiln's shape, with a guess."""

    def __init__(self, *, token: str, mimic: bool = False) -> None:
        self.token = token
        self.headers_seen: list[dict[str, str]] = []
        seen, body = self.headers_seen, self._answer(mimic)

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                seen.append({k.lower(): v for k, v in self.headers.items()})
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _any

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def _answer(mimic: bool) -> bytes:
        if mimic:
            guess = {"installation_id": "0" * 32, "version": "0.1.0", "proof": "0" * 64}
            return json.dumps(guess).encode()
        return b'{"hello": "I am an app on the host network"}'

    def any_token_seen(self) -> bool:
        return any(
            "authorization" in h or any(self.token in v for v in h.values())
            for h in self.headers_seen
        )


@contextmanager
def squatting(*, token: str, mimic: bool = False) -> Iterator[Squatter]:
    squat = Squatter(token=token, mimic=mimic)
    squat.thread.start()
    try:
        yield squat
    finally:
        squat.server.shutdown()
        squat.server.server_close()
