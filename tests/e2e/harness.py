"""A kiln server run the way a user runs it, in a private KILN_HOME, against the test's
private dockerd, with its own NGINX on a free port. Cleans up everything it started.

``start()`` runs the server as a child of the test (``kill9()`` kills it); ``up()`` runs
``kiln up``, which puts it under kiln's supervisor. The harness speaks HTTP to the API over its
unix socket (KILN_HOME/run/api.sock), as a user's CLI does.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx

from kiln.config import Settings
from kiln.registry.embedded import EmbeddedRegistry
from kiln.router.nginx import NginxRouter
from kiln.supervisor.control import signal_holder, wait_released
from kiln.supervisor.pidfile import holder

REPO = Path(__file__).resolve().parents[2]
KILN_CLI = [sys.executable, "-m", "kiln.cli.main"]


class UnixSocketTransport(httpx.BaseTransport):
    """httpx over a unix socket, one connection per request, closed on every path (httpx's own
    ``uds=`` transport leaks the socket when the connect fails, e.g. while kiln restarts, and
    tests turn that ResourceWarning into an error)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {}).get("read") or 60.0
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            try:
                sock.connect(str(self.path))
            except OSError as exc:
                raise httpx.ConnectError(f"{self.path}: {exc}", request=request) from exc
            connection = http.client.HTTPConnection("kiln", timeout=timeout)
            connection.sock = sock
            headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            try:
                connection.request(
                    request.method,
                    request.url.raw_path.decode(),
                    body=request.read(),
                    headers={"Host": "kiln", **headers},
                )
                answer = connection.getresponse()
                content = answer.read()
            except (OSError, http.client.HTTPException) as exc:
                raise httpx.ReadError(f"{self.path}: {exc}", request=request) from exc
            return httpx.Response(
                answer.status, headers=answer.getheaders(), content=content, request=request
            )
        finally:
            sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or condition}; last: {last!r}"
    )


@dataclass(frozen=True)
class ContainerSummary:
    id: str
    name: str
    status: str
    labels: dict[str, str]


class KilnHarness:
    def __init__(self, home: Path, docker_host: str, *, env: dict[str, str] | None = None) -> None:
        """``env`` overrides the harness's KILN_* choices (e.g. KILN_HTTP_PORT)."""
        self.home = home
        self.docker_host = docker_host
        self.env = {
            **os.environ,
            "KILN_HOME": str(home),
            "KILN_API_PORT": str(free_port()),
            "KILN_HTTP_PORT": str(free_port()),
            "KILN_RESYNC_SECONDS": "1",
            "DOCKER_HOST": docker_host,
            "KILN_ENV": "dev",
            "NO_COLOR": "1",
            "COLUMNS": "200",
            **(env or {}),
        }
        self.settings = Settings.from_env(self.env)
        self.api_port = self.settings.api_port
        self.http_port = self.settings.http_port
        self.process: subprocess.Popen[bytes] | None = None
        self.docker = docker.DockerClient(base_url=docker_host)

    # --- the server ---------------------------------------------------------------------

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        """The server as a child of this test, unsupervised."""
        log = open(self.home / "server.log", "ab")  # noqa: SIM115 - kept open for the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kiln.api.server"],
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        log.close()
        wait_until(
            self._healthy, timeout=30, what=f"kiln server to answer; log:\n{self.server_log()}"
        )

    def up(self) -> subprocess.CompletedProcess[str]:
        """``kiln up``: the server under kiln's supervisor; fails the test if it does not serve."""
        result = self.cli("up")
        assert result.returncode == 0, result.stdout + result.stderr + self.server_log()
        wait_until(self.healthy, timeout=30, what=f"kiln to answer; log:\n{self.server_log()}")
        return result

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"kiln server exited with {self.process.returncode}:\n{self.server_log()}"
            )
        return self.healthy()

    def healthy(self) -> bool:
        try:
            return self.api("GET", "/healthz", timeout=1).status_code == 200
        except (httpx.HTTPError, OSError):
            return False

    def server_pid(self) -> int | None:
        """The live server's pid (its pid file is locked while it lives), else None."""
        return holder(self.settings.server_pid_path)

    def supervisor_pid(self) -> int | None:
        return holder(self.settings.supervisor_pid_path)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def server_log(self) -> str:
        texts = []
        for path in (self.home / "server.log", self.settings.server_log_path):
            if path.exists():
                texts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(texts) or "(no log)"

    def supervisor_log(self) -> str:
        path = self.settings.supervisor_log_path
        return path.read_text(errors="replace") if path.exists() else "(no log)"

    def stop_supervised(self) -> None:
        """Stop a supervisor and a server this harness did not start itself (by pid)."""
        for path in (self.settings.supervisor_pid_path, self.settings.server_pid_path):
            if signal_holder(path, signal.SIGTERM) is not None and not wait_released(path, 60):
                signal_holder(path, signal.SIGKILL)
                wait_released(path, 10)

    def teardown(self) -> None:
        self.stop()
        self.stop_supervised()
        router = NginxRouter(
            prefix=self.settings.nginx_dir,
            listen_host=self.settings.http_host,
            listen_port=self.settings.http_port,
            run_dir=self.settings.run_dir,
        )
        with contextlib.suppress(Exception):
            asyncio.run(router.stop())
        # The embedded registry outlives kiln like NGINX does: stop the one this home ran.
        if (self.home / "registry" / "registry.pid").exists():
            with contextlib.suppress(Exception):
                asyncio.run(EmbeddedRegistry(self.home / "registry").stop())
        # Only this installation's containers: another kiln on the same engine keeps its own.
        if self.installation_id is not None:
            for container in self.docker.containers.list(
                all=True, filters={"label": f"io.kiln.installation={self.installation_id}"}
            ):
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)
        self.docker.close()

    # --- talking to it ------------------------------------------------------------------

    @property
    def installation_id(self) -> str | None:
        """This kiln's installation id (made by the server at its first start)."""
        path = self.settings.installation_id_path
        return path.read_text().strip() if path.exists() else None

    @property
    def token(self) -> str:
        return (self.home / "token").read_text().strip()

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An HTTP request to the API over its unix socket (with the token, when there is one)."""
        headers = dict(kwargs.pop("headers", {}))
        if path != "/healthz":
            headers.setdefault("Authorization", f"Bearer {self.token}")
        transport = UnixSocketTransport(self.settings.api_socket_path)
        with httpx.Client(transport=transport, base_url="http://kiln") as client:
            return client.request(
                method, path, headers=headers, timeout=kwargs.pop("timeout", 60), **kwargs
            )

    def cli(
        self, *args: str, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KILN_CLI, *args],
            env=self.env,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            cwd=REPO,
        )

    def cli_json(self, *args: str) -> Any:
        result = self.cli(*args, "--json")
        assert result.returncode == 0, f"kiln {' '.join(args)} failed: {result.stderr}"
        return json.loads(result.stdout)

    def deploy(
        self, spec: str, *args: str, name: str = "kiln.yaml"
    ) -> subprocess.CompletedProcess[str]:
        path = self.home / f"{time.monotonic_ns()}-{name}"
        path.write_text(spec)
        return self.cli("deploy", "-f", str(path), *args)

    def get(self, host: str, path: str = "/") -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{self.http_port}{path}", headers={"Host": host}, timeout=5
        )

    def containers(self, app: str) -> list[ContainerSummary]:
        """This installation's containers of the app, from one list call (no per-container
        inspect, which races with kiln removing containers)."""
        rows = self.docker.api.containers(
            all=True,
            filters={
                "label": [
                    "io.kiln.managed=true",
                    f"io.kiln.installation={self.installation_id}",
                    f"io.kiln.app={app}",
                ]
            },
        )
        return [
            ContainerSummary(
                id=row["Id"],
                name=row["Names"][0].lstrip("/"),
                status=row["State"],
                labels=row.get("Labels") or {},
            )
            for row in rows
        ]

    def status(self, app: str) -> dict[str, Any]:
        response = self.api("GET", f"/v1/apps/dev/{app}")
        response.raise_for_status()
        return dict(response.json())

    def wait_ready(
        self, app: str, count: int, *, release: int | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            status = self.status(app)
            ready = [
                i
                for i in status["instances"]
                if i["ready"] and i["in_router"] and (release is None or i["release"] == release)
            ]
            others = [
                i for i in status["instances"] if release is not None and i["release"] != release
            ]
            if len(ready) == count and not others and status["rollout"] is None:
                return status
            return None

        return dict(
            wait_until(
                check, timeout=timeout, interval=0.1, what=f"{count} ready instances of {app}"
            )
        )
