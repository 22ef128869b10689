"""``KilnClient``: one method per kiln API endpoint, typed answers, ``kiln.errors`` on failure.

Synchronous (httpx), because its main user is the CLI. Streams are iterators:
``follow_events`` (Server-Sent Events, reconnecting after the last id it saw) and ``logs``
(NDJSON).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from kiln.client.errors import ServerUnreachable, error_from_body
from kiln.client.models import AppStatus, DeployResult, Event, Health, LogLine, Release
from kiln.client.sse import parse_sse
from kiln.config import Settings
from kiln.errors import KilnError, TemporaryFailure
from kiln.model import AppKey

M = TypeVar("M", bound=BaseModel)

# The server sends a heartbeat comment every ~15 s; three missed ones mean the stream is dead.
SSE_READ_TIMEOUT = 45.0


def read_token(settings: Settings) -> str | None:
    """``KILN_TOKEN``, else the token file the server wrote, else None."""
    if token := os.environ.get("KILN_TOKEN", "").strip():
        return token
    try:
        return settings.token_path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _app_path(key: AppKey) -> str:
    return f"/v1/apps/{key.environment}/{key.app}"


def _key_params(key: AppKey | None) -> dict[str, str]:
    return {} if key is None else {"env": key.environment, "app": key.app}


class KilnClient:
    def __init__(
        self,
        *,
        base_url: str,
        token: str | None,
        actor: str,
        timeout: float = 30,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the network, e.g. ``httpx.MockTransport`` in tests."""
        self.base_url = base_url.rstrip("/")
        headers = {"X-Kiln-Actor": actor, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, actor: str = "client", timeout: float = 30
    ) -> KilnClient:
        return cls(
            base_url=settings.api_url, token=read_token(settings), actor=actor, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- server ---------------------------------------------------------------------------

    def health(self) -> Health:
        return self._get_model("/healthz", Health)

    def is_running(self) -> bool:
        try:
            return self.health().ok
        except KilnError:
            return False

    def shutdown(self) -> None:
        self._json("POST", "/v1/shutdown")

    # --- apps -----------------------------------------------------------------------------

    def list_apps(self) -> list[AppStatus]:
        return self._get_list("/v1/apps", AppStatus)

    def status(self, key: AppKey) -> AppStatus:
        return self._get_model(_app_path(key), AppStatus)

    def deploy(self, spec_text: str, *, message: str = "") -> DeployResult:
        data = self._json("POST", "/v1/deploy", json={"spec": spec_text, "message": message})
        return DeployResult.model_validate(data)

    def rollback(self, key: AppKey, *, to: int | None = None, message: str = "") -> DeployResult:
        body = {"to": to, "message": message}
        data = self._json("POST", f"{_app_path(key)}/rollback", json=body)
        return DeployResult.model_validate(data)

    def scale(self, key: AppKey, instances: int) -> AppStatus:
        data = self._json("POST", f"{_app_path(key)}/scale", json={"instances": instances})
        return AppStatus.model_validate(data)

    def stop(self, key: AppKey) -> AppStatus:
        return AppStatus.model_validate(self._json("POST", f"{_app_path(key)}/stop"))

    def destroy(self, key: AppKey) -> None:
        self._json("DELETE", _app_path(key))

    def releases(self, key: AppKey) -> list[Release]:
        return self._get_list(f"{_app_path(key)}/releases", Release)

    # --- events ---------------------------------------------------------------------------

    def events(self, *, key: AppKey | None = None, after: int = 0, limit: int = 100) -> list[Event]:
        """Oldest first: ids above ``after``; with ``after=0``, the last ``limit`` events."""
        params: dict[str, Any] = {**_key_params(key), "after": after, "limit": limit}
        return self._get_list("/v1/events", Event, params=params)

    def last_event_id(self, key: AppKey | None = None) -> int:
        latest = self.events(key=key, after=0, limit=1)
        return latest[-1].id if latest else 0

    def stream_events(self, *, key: AppKey | None = None, after: int = 0) -> Iterator[Event]:
        """One SSE connection: events after ``after`` until the server ends the stream."""
        params: dict[str, Any] = {**_key_params(key), "after": after}
        timeout = httpx.Timeout(self._http.timeout.connect, read=SSE_READ_TIMEOUT)
        headers = {"Accept": "text/event-stream"}
        with self._stream("GET", "/v1/events/stream", params, timeout, headers) as response:
            for message in parse_sse(response.iter_lines()):
                if message.event == "error":
                    raise error_from_body(500, json.loads(message.data))
                yield Event.model_validate_json(message.data)

    def follow_events(
        self, *, key: AppKey | None = None, after: int = 0, give_up_after: float = 30.0
    ) -> Iterator[Event]:
        """Events as they happen, forever; reconnects after the last id it saw when the stream
        drops. Raises the last connection error after ``give_up_after`` seconds without one."""
        last = after
        failing_since: float | None = None
        delay = 0.2
        while True:
            try:
                for event in self.stream_events(key=key, after=last):
                    failing_since, delay = None, 0.2
                    last = event.id
                    yield event
                # The server ended a healthy stream (a restart, a proxy): reconnect soon.
                failing_since, delay = None, 0.2
            except TemporaryFailure:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since >= give_up_after:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    # --- logs -----------------------------------------------------------------------------

    def logs(
        self, key: AppKey, *, instance: str | None = None, follow: bool = False, tail: int = 100
    ) -> Iterator[LogLine]:
        params: dict[str, Any] = {"follow": follow, "tail": tail}
        if instance:
            params["instance"] = instance
        # A followed log may be silent for hours; there is no heartbeat to time out on.
        timeout = httpx.Timeout(self._http.timeout.connect, read=None if follow else 60.0)
        with self._stream("GET", f"{_app_path(key)}/logs", params, timeout, {}) as response:
            for line in response.iter_lines():
                if not line.strip():
                    continue
                data = json.loads(line)
                if "error" in data:
                    raise error_from_body(500, data)
                yield LogLine.model_validate(data)

    # --- plumbing -------------------------------------------------------------------------

    def _get_model(self, path: str, model: type[M]) -> M:
        return model.model_validate(self._json("GET", path))

    def _get_list(self, path: str, model: type[M], params: dict[str, Any] | None = None) -> list[M]:
        return TypeAdapter(list[model]).validate_python(  # type: ignore[valid-type]
            self._json("GET", path, params=params)
        )

    def _json(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        with self._mapped_errors():
            response = self._http.request(method, path, json=json, params=params)
        _raise_for_error(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    @contextmanager
    def _stream(
        self,
        method: str,
        path: str,
        params: dict[str, Any],
        timeout: httpx.Timeout,
        headers: dict[str, str],
    ) -> Iterator[httpx.Response]:
        with (
            self._mapped_errors(),
            self._http.stream(
                method, path, params=params, timeout=timeout, headers=headers
            ) as response,
        ):
            if response.is_error:
                response.read()
                _raise_for_error(response)
            yield response

    @contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError as exc:
            raise ServerUnreachable(self.base_url) from exc
        except httpx.TimeoutException as exc:
            raise TemporaryFailure(f"kiln at {self.base_url} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise TemporaryFailure(
                f"lost the connection to kiln at {self.base_url}: {exc}"
            ) from exc


def _raise_for_error(response: httpx.Response) -> None:
    if not response.is_error:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    raise error_from_body(response.status_code, body, response.text)
