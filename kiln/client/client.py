"""``KilnClient``: one method per kiln API endpoint, typed answers, ``kiln.errors`` on failure.

Synchronous (httpx), because its main user is the CLI. Streams are iterators:
``follow_events`` (Server-Sent Events, reconnecting after the last id it saw) and ``logs``
(NDJSON).

Where the server is (``Endpoint.of(settings)``): the unix socket ``KILN_API_SOCKET`` (default
``$KILN_HOME/run/api.sock``), or TCP only when asked: ``KILN_API_URL``, or ``KILN_API_TCP=1``
with ``KILN_API_HOST``/``KILN_API_PORT``. The token goes only to a server the client has
identified, before its first authenticated request:

    unix socket ─▶ the socket file is the user's own (in a 0700 run dir): it is this kiln
    TCP         ─▶ POST /v1/identify {nonce} ─▶ proof == HMAC(token, nonce)? else NotThisKiln,
                   and the token was never sent
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from kiln.client._httpx import httpx
from kiln.client.errors import (
    NotThisKiln,
    ServerUnreachable,
    UntrustedCertificate,
    error_from_body,
)
from kiln.client.models import (
    AppStatus,
    Event,
    Health,
    Identity,
    IdentityAnswer,
    LogLine,
    Release,
)
from kiln.client.sse import sse_messages
from kiln.client.unix import UnixSocketTransport
from kiln.config import Settings, identity_proof, refuse_unless_private, token_id
from kiln.errors import InvalidInput, KilnError, TemporaryFailure, Unauthorized
from kiln.model import AppKey

if TYPE_CHECKING:
    # Loaded by the methods that answer with them: a read (`kiln status --json`) does not
    # define these models (kiln/cli/README.md, "Start-up").
    from kiln.client.command_models import (
        AuditEntry,
        BuiltImage,
        CopyProgress,
        DeployResult,
        DriftReport,
        ImageEntry,
        KeyRotation,
        NewToken,
        PruneReport,
        RolloutView,
        Secret,
        SecretSet,
        Token,
        Volume,
        VolumeSnapshot,
    )
    from kiln.client.promotion_models import Approval, Diff, Promotion

M = TypeVar("M", bound=BaseModel)

# The server sends a heartbeat comment every ~15 s; three missed ones mean the stream is dead.
SSE_READ_TIMEOUT = 45.0
# An identity answer is ~200 bytes; whatever else is on the port gets this much and no more.
MAX_IDENTITY_BYTES = 64 * 1024
SOCKET_BASE_URL = "http://kiln"
# The server waits up to a minute for a destroyed app's instances to go (``destroy(wait=True)``).
DESTROY_WAIT_TIMEOUT = 90.0  # httpx wants a URL; on the socket the host part is unused


def read_token(settings: Settings) -> str | None:
    """``KILN_TOKEN``, else the token file the server wrote, else None.

    A token file other users can read is refused (``InvalidInput`` naming ``chmod 600``).
    """
    if token := os.environ.get("KILN_TOKEN", "").strip():
        return token
    refuse_unless_private(settings.token_path)
    try:
        return settings.token_path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class Endpoint:
    """Where the kiln API is: a unix socket (the default) or a TCP base URL (opt-in)."""

    url: str
    socket_path: Path | None = None
    ca_file: Path | None = None  # KILN_CA: trusted for an https URL (else the system's CAs)

    @classmethod
    def of(cls, settings: Settings) -> Endpoint:
        if settings.client_api_url:
            return cls(url=settings.client_api_url, ca_file=settings.client_ca)
        if settings.api_tcp:
            return cls(url=settings.api_url, ca_file=settings.client_ca)
        return cls(url=SOCKET_BASE_URL, socket_path=settings.api_socket_path)

    @property
    def where(self) -> str:
        """For people: ``127.0.0.1:7070`` or ``the unix socket /home/ann/.../api.sock``."""
        if self.socket_path is not None:
            return f"the unix socket {self.socket_path}"
        return httpx.URL(self.url).netloc.decode("ascii")

    @property
    def description(self) -> str:
        """For ``kiln version``: the URL, or ``unix:/path``."""
        return f"unix:{self.socket_path}" if self.socket_path is not None else self.url


def _app_path(key: AppKey) -> str:
    return f"/v1/apps/{key.environment}/{key.app}"


def _key_params(key: AppKey | None) -> dict[str, str]:
    return {} if key is None else {"env": key.environment, "app": key.app}


class KilnClient:
    def __init__(
        self,
        *,
        base_url: str = SOCKET_BASE_URL,
        socket_path: Path | None = None,
        token: str | None,
        actor: str,
        timeout: float = 30,
        transport: httpx.BaseTransport | None = None,
        ca_file: Path | None = None,
    ) -> None:
        """``socket_path``: talk HTTP over this unix socket (``base_url`` is then unused).
        ``transport`` replaces the network, e.g. ``httpx.MockTransport`` in tests.
        ``ca_file``: the CA (PEM) an https server's certificate must chain to; default the
        system's CAs."""
        self.endpoint = Endpoint(url=base_url.rstrip("/"), socket_path=socket_path, ca_file=ca_file)
        self.base_url = self.endpoint.url
        if transport is None and socket_path is not None:
            transport = UnixSocketTransport(socket_path)
        self._token = token
        self._trusted = False
        self._identity: Identity | None = None
        # The claim of who asks; the server records it as a claim next to what it verified.
        headers = {"X-Kiln-Actor": actor, "Accept": "application/json"}
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            # kiln's API is local: never through a proxy from the environment, never to
            # wherever a redirect points.
            trust_env=False,
            follow_redirects=False,
            verify=_tls_verification(ca_file),
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, actor: str = "client", timeout: float = 30
    ) -> KilnClient:
        endpoint = Endpoint.of(settings)
        return cls(
            base_url=endpoint.url,
            socket_path=endpoint.socket_path,
            token=read_token(settings),
            actor=actor,
            timeout=timeout,
            ca_file=endpoint.ca_file,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- server ---------------------------------------------------------------------------

    def health(self) -> Health:
        """Is a server up? Asked without the token (``/healthz`` needs none)."""
        try:
            return Health.model_validate(self._json("GET", "/healthz", authenticated=False))
        except (ValueError, ValidationError) as exc:
            raise NotThisKiln(self.endpoint.where, "its /healthz answer is not kiln's") from exc

    def is_running(self) -> bool:
        try:
            return self.health().ok
        except KilnError:
            return False

    def shutdown(self) -> None:
        self._json("POST", "/v1/shutdown")

    def identify(self) -> Identity:
        """Ask the server who it is, with a fresh nonce; ``proven`` when its proof matches
        this client's token. ``NotThisKiln`` when the answer is not a kiln's at all."""
        nonce = secrets.token_hex(16)
        with (
            self._mapped_errors(),
            self._http.stream("POST", "/v1/identify", json=self._identify_body(nonce)) as response,
        ):
            content = b""
            for chunk in response.iter_bytes():
                content += chunk
                if len(content) > MAX_IDENTITY_BYTES:
                    break
        answer: IdentityAnswer | None = None
        if response.status_code == 200:
            try:
                answer = IdentityAnswer.model_validate_json(content)
            except ValidationError:
                answer = None
        if answer is None:
            raise NotThisKiln(self.endpoint.where, f"it answered HTTP {response.status_code}")
        expected = identity_proof(self._token, nonce) if self._token else ""
        proven = bool(expected and answer.proof) and hmac.compare_digest(
            answer.proof or "", expected
        )
        return Identity(
            installation_id=answer.installation_id,
            version=answer.version,
            proven=proven,
            token_known=answer.proof is not None,
        )

    def _identify_body(self, nonce: str) -> dict[str, str]:
        # The token's id names no secret: it lets a kiln with many tokens prove the right one.
        body = {"nonce": nonce}
        if self._token:
            body["token_id"] = token_id(self._token)
        return body

    def identity(self) -> Identity:
        """The server's identity as it says it, asked once per client."""
        if self._identity is None:
            self._identity = self.identify()
        return self._identity

    def server_identity(self) -> Identity:
        """The identity of a server this client trusts with its token (``NotThisKiln`` if
        it is not ours): what ``kiln status --json`` and ``kiln version`` show."""
        self._ensure_trusted()
        return self.identity()

    # --- apps -----------------------------------------------------------------------------

    def list_apps(self) -> list[AppStatus]:
        return self._get_list("/v1/apps", AppStatus)

    def status(self, key: AppKey) -> AppStatus:
        return self._get_model(_app_path(key), AppStatus)

    def metrics_text(self) -> str:
        """``GET /metrics``: the Prometheus text exposition (``kiln top`` reads it)."""
        headers = self._auth()
        with self._mapped_errors():
            response = self._http.request("GET", "/metrics", headers=headers)
        _raise_for_error(response)
        return response.text

    def deploy(
        self, spec_text: str, *, message: str = "", environment: str | None = None
    ) -> DeployResult:
        from kiln.client.command_models import DeployResult

        body: dict[str, Any] = {"spec": spec_text, "message": message}
        if environment is not None:
            body["environment"] = environment
        data = self._json("POST", "/v1/deploy", json=body)
        return DeployResult.model_validate(data)

    def rollback(self, key: AppKey, *, to: int | None = None, message: str = "") -> DeployResult:
        from kiln.client.command_models import DeployResult

        body = {"to": to, "message": message}
        data = self._json("POST", f"{_app_path(key)}/rollback", json=body)
        return DeployResult.model_validate(data)

    def scale(self, key: AppKey, instances: int) -> AppStatus:
        data = self._json("POST", f"{_app_path(key)}/scale", json={"instances": instances})
        return AppStatus.model_validate(data)

    def stop(self, key: AppKey) -> AppStatus:
        return AppStatus.model_validate(self._json("POST", f"{_app_path(key)}/stop"))

    def destroy(self, key: AppKey, *, wait: bool = False) -> None:
        """Forget the app: its routes are gone when this returns, its instances are stopped
        and removed in the background. ``wait``: return once they are gone too (the server
        gives up after a minute with ``TemporaryFailure``; it keeps removing them)."""
        if not wait:
            self._json("DELETE", _app_path(key))
            return
        headers = self._auth()
        timeout = httpx.Timeout(self._http.timeout.connect, read=DESTROY_WAIT_TIMEOUT)
        with self._mapped_errors():
            response = self._http.request(
                "DELETE", _app_path(key), params={"wait": "true"}, headers=headers, timeout=timeout
            )
        _raise_for_error(response)

    def releases(self, key: AppKey) -> list[Release]:
        return self._get_list(f"{_app_path(key)}/releases", Release)

    # --- secrets ----------------------------------------------------------------------------

    def set_secret(
        self, key: AppKey, name: str, value: bytes, *, deploy: bool = False
    ) -> SecretSet:
        """A new version (the value goes in the body, never in the URL or a log)."""
        from kiln.client.command_models import SecretSet

        headers = {**self._auth(), "Content-Type": "application/octet-stream"}
        with self._mapped_errors():
            response = self._http.request(
                "PUT",
                f"{_app_path(key)}/secrets/{name}",
                content=value,
                params={"deploy": "true"} if deploy else None,
                headers=headers,
            )
        _raise_for_error(response)
        return SecretSet.model_validate(response.json())

    def list_secrets(self, key: AppKey) -> list[Secret]:
        from kiln.client.command_models import Secret

        return self._get_list(f"{_app_path(key)}/secrets", Secret)

    def remove_secret(self, key: AppKey, name: str) -> None:
        self._json("DELETE", f"{_app_path(key)}/secrets/{name}")

    def rotate_master_key(self) -> KeyRotation:
        from kiln.client.command_models import KeyRotation

        return KeyRotation.model_validate(self._json("POST", "/v1/secrets/rotate-key"))

    # --- volumes ----------------------------------------------------------------------------

    def list_volumes(self, key: AppKey | None = None) -> list[Volume]:
        from kiln.client.command_models import Volume

        if key is None:
            return self._get_list("/v1/volumes", Volume)
        return self._get_list(f"{_app_path(key)}/volumes", Volume)

    def inspect_volume(self, key: AppKey, name: str) -> Volume:
        from kiln.client.command_models import Volume

        return self._get_model(f"{_app_path(key)}/volumes/{name}", Volume)

    def remove_volume(self, key: AppKey, name: str) -> None:
        self._json("DELETE", f"{_app_path(key)}/volumes/{name}")

    def snapshot_volume(self, key: AppKey, name: str) -> Iterator[CopyProgress | VolumeSnapshot]:
        """Progress now and then, then the snapshot (an error line raises its error)."""
        yield from self._copy(f"{_app_path(key)}/volumes/{name}/snapshots", None)

    def restore_volume(
        self, key: AppKey, name: str, snapshot: str
    ) -> Iterator[CopyProgress | VolumeSnapshot]:
        yield from self._copy(f"{_app_path(key)}/volumes/{name}/restore", {"snapshot": snapshot})

    def _copy(
        self, path: str, body: dict[str, Any] | None
    ) -> Iterator[CopyProgress | VolumeSnapshot]:
        from kiln.client.command_models import CopyProgress, VolumeSnapshot

        headers = {**self._auth()}
        # A copy of a large volume takes minutes: progress lines come every quarter second.
        timeout = httpx.Timeout(self._http.timeout.connect, read=600.0)
        with (
            self._mapped_errors(),
            self._http.stream("POST", path, json=body, timeout=timeout, headers=headers) as answer,
        ):
            if answer.is_error:
                answer.read()
                _raise_for_error(answer)
            for line in answer.iter_lines():
                if not line.strip():
                    continue
                data = json.loads(line)
                if "error" in data:
                    raise error_from_body(500, data)
                if "progress" in data:
                    yield CopyProgress.model_validate(data["progress"])
                elif "snapshot" in data:
                    yield VolumeSnapshot.model_validate(data["snapshot"])

    # --- rollouts -------------------------------------------------------------------------

    def drift(self, key: AppKey | None = None) -> DriftReport:
        """Check the instances of ``key`` (or of every app) against their releases now."""
        from kiln.client.command_models import DriftReport

        path = f"{_app_path(key)}/drift" if key is not None else "/v1/drift"
        return self._get_model(path, DriftReport)

    def rollout_status(self, key: AppKey) -> RolloutView:
        """The rollout in progress, else the latest one (``rollout`` None: never deployed)."""
        from kiln.client.command_models import RolloutView

        return self._get_model(f"{_app_path(key)}/rollout", RolloutView)

    def promote(self, key: AppKey, *, full: bool = False) -> RolloutView:
        """Canary: the next step (``full``: all traffic now); blue-green: all traffic.
        ``Conflict`` without a canary or blue-green rollout in progress."""
        return self._rollout_command(key, "promote", {"full": full})

    def pause(self, key: AppKey) -> RolloutView:
        return self._rollout_command(key, "pause")

    def resume(self, key: AppKey) -> RolloutView:
        return self._rollout_command(key, "resume")

    def abort(self, key: AppKey) -> RolloutView:
        """Traffic back to the stable release at once. ``Conflict`` without a rollout."""
        return self._rollout_command(key, "abort")

    def retry(self, key: AppKey) -> RolloutView:
        """A failed or aborted rollout again from its first step. ``Conflict`` otherwise."""
        return self._rollout_command(key, "retry")

    def _rollout_command(
        self, key: AppKey, verb: str, body: dict[str, Any] | None = None
    ) -> RolloutView:
        from kiln.client.command_models import RolloutView

        data = self._json("POST", f"{_app_path(key)}/rollout/{verb}", json=body)
        return RolloutView.model_validate(data)

    # --- promotion ------------------------------------------------------------------------

    def promote_release(
        self,
        app: str,
        *,
        source: str,
        target: str,
        release: int | None = None,
        dry_run: bool = False,
        message: str = "",
    ) -> Promotion:
        """A release in ``target`` with the source release's digest; ``GateRefused`` (a
        ``Conflict``) when a gate fails, nothing changed."""
        from kiln.client.promotion_models import Promotion

        body = {
            "app": app,
            "source": source,
            "target": target,
            "release": release,
            "dry_run": dry_run,
            "message": message,
        }
        return Promotion.model_validate(self._json("POST", "/v1/promotions", json=body))

    def approve(
        self,
        app: str,
        *,
        environment: str,
        release: int,
        source: str | None = None,
        note: str = "",
    ) -> Approval:
        from kiln.client.promotion_models import Approval

        body = {
            "app": app,
            "environment": environment,
            "release": release,
            "source": source,
            "note": note,
        }
        return Approval.model_validate(self._json("POST", "/v1/approvals", json=body))

    def diff_releases(self, key: AppKey, left: int, right: int) -> Diff:
        from kiln.client.promotion_models import Diff

        data = self._json("GET", f"{_app_path(key)}/diff", params={"left": left, "right": right})
        return Diff.model_validate(data)

    def diff_environments(self, app: str, left: str, right: str) -> Diff:
        from kiln.client.promotion_models import Diff

        params = {"app": app, "left": left, "right": right}
        return Diff.model_validate(self._json("GET", "/v1/diff", params=params))

    # --- events ---------------------------------------------------------------------------

    def events(
        self,
        *,
        key: AppKey | None = None,
        after: int = 0,
        limit: int = 100,
        types: Sequence[str] = (),
    ) -> list[Event]:
        """Oldest first: ids above ``after``; with ``after=0``, the last ``limit`` events.
        ``types``: only these categories (``rollout``) or kinds (``rollout.failed``)."""
        params: dict[str, Any] = {**_key_params(key), "after": after, "limit": limit}
        if types:
            params["type"] = list(types)
        return self._get_list("/v1/events", Event, params=params)

    def last_event_id(self, key: AppKey | None = None) -> int:
        latest = self.events(key=key, after=0, limit=1)
        return latest[-1].id if latest else 0

    def stream_events(
        self, *, key: AppKey | None = None, after: int = 0, types: Sequence[str] = ()
    ) -> Iterator[Event]:
        """One SSE connection: events after ``after`` until the server ends the stream."""
        params: dict[str, Any] = {**_key_params(key), "after": after}
        if types:
            params["type"] = list(types)
        timeout = httpx.Timeout(self._http.timeout.connect, read=SSE_READ_TIMEOUT)
        headers = {"Accept": "text/event-stream"}
        with self._stream("GET", "/v1/events/stream", params, timeout, headers) as response:
            for message in sse_messages(response):
                if message.event == "error":
                    raise error_from_body(500, json.loads(message.data))
                yield Event.model_validate_json(message.data)

    def follow_events(
        self,
        *,
        key: AppKey | None = None,
        after: int = 0,
        give_up_after: float = 30.0,
        types: Sequence[str] = (),
    ) -> Iterator[Event]:
        """Events as they happen, forever; reconnects after the last id it saw when the stream
        drops. Raises the last connection error after ``give_up_after`` seconds without one."""
        last = after
        failing_since: float | None = None
        delay = 0.2
        while True:
            try:
                for event in self.stream_events(key=key, after=last, types=types):
                    failing_since, delay = None, 0.2
                    last = event.id
                    yield event
                # The server ended a healthy stream (a restart, a proxy): reconnect soon.
                failing_since, delay = None, 0.2
            except NotThisKiln:
                raise  # not a dropped stream: retrying would not change who answers
            except TemporaryFailure:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since >= give_up_after:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    # --- access (admin tokens) ----------------------------------------------------------

    def create_token(self, name: str, *, role: str, environments: list[str]) -> NewToken:
        """A new API token (in ``.token``, this once). ``Conflict`` when the name is taken."""
        from kiln.client.command_models import NewToken

        body = {"name": name, "role": role, "environments": environments}
        return NewToken.model_validate(self._json("POST", "/v1/tokens", json=body))

    def list_tokens(self, *, revoked: bool = False) -> list[Token]:
        from kiln.client.command_models import Token

        return self._get_list("/v1/tokens", Token, params={"revoked": revoked})

    def revoke_token(self, name: str) -> Token:
        """It stops working at once. ``NotFound``; ``Conflict`` for the caller's own token or
        the last admin token."""
        from kiln.client.command_models import Token

        return Token.model_validate(self._json("DELETE", f"/v1/tokens/{name}"))

    def audit(
        self,
        *,
        environment: str | None = None,
        app: str | None = None,
        since: datetime | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Audit entries oldest first (the last ``limit`` when ``after`` is 0)."""
        from kiln.client.command_models import AuditEntry

        params: dict[str, Any] = {"after": after, "limit": limit}
        if environment:
            params["env"] = environment
        if app:
            params["app"] = app
        if since is not None:
            params["since"] = since.isoformat()
        return self._get_list("/v1/audit", AuditEntry, params=params)

    # --- logs -----------------------------------------------------------------------------

    def logs(
        self,
        key: AppKey,
        *,
        instance: str | None = None,
        follow: bool = False,
        tail: int = 100,
        release: int | None = None,
        since: str | None = None,
        grep: str | None = None,
        router: bool = False,
    ) -> Iterator[LogLine]:
        """Kept lines of the app's instances (gone ones too) in time order; ``since`` is a
        duration (``10m``); ``router``: NGINX's access lines of the app instead."""
        params: dict[str, Any] = {"follow": follow, "tail": tail}
        if instance:
            params["instance"] = instance
        if release is not None:
            params["release"] = release
        if since:
            params["since"] = since
        if grep:
            params["grep"] = grep
        if router:
            params["router"] = True
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

    # --- images ------------------------------------------------------------------------------

    def build_image(
        self,
        context: bytes,
        *,
        repository: str,
        tag: str,
        labels: dict[str, str],
        dockerfile: str = "Dockerfile",
        timeout: float = 1800,
    ) -> BuiltImage:
        """Upload the build context (a tar); the server builds, pushes and pins it."""
        from kiln.client.command_models import BuiltImage

        params: dict[str, Any] = {
            "repository": repository,
            "tag": tag,
            "dockerfile": dockerfile,
            "label": [f"{k}={v}" for k, v in sorted(labels.items())],
        }
        headers = {**self._auth(), "Content-Type": "application/octet-stream"}
        with self._mapped_errors():
            response = self._http.post(
                "/v1/images/build",
                content=context,
                params=params,
                headers=headers,
                timeout=httpx.Timeout(30, read=timeout),
            )
        _raise_for_error(response)
        return BuiltImage.model_validate(response.json())

    def images(self, repository: str | None = None) -> list[ImageEntry]:
        from kiln.client.command_models import ImageEntry

        params = {"repository": repository} if repository else None
        return self._get_list("/v1/images", ImageEntry, params)

    def prune_images(self, *, dry_run: bool = False) -> PruneReport:
        from kiln.client.command_models import PruneReport

        return PruneReport.model_validate(
            self._json("POST", "/v1/images/prune", json={"dry_run": dry_run})
        )

    def _ensure_trusted(self) -> None:
        """Before the token leaves this process for the first time: is this our kiln?"""
        if self._trusted or not self._token:
            return  # without a token there is nothing to leak
        if self.endpoint.socket_path is not None:
            self._check_socket_owner(self.endpoint.socket_path)
        elif not (identity := self.identity()).proven:
            if not identity.token_known:
                raise Unauthorized(
                    f"the kiln on {self.endpoint.where} knows no active token like yours "
                    "(revoked? another kiln's?); the token was not sent. Ask an admin for a "
                    "token (`kiln token create`), or set KILN_TOKEN"
                )
            raise NotThisKiln(
                self.endpoint.where,
                "it could not prove it holds this kiln's API token (KILN_HOME/token or "
                "KILN_TOKEN), so the token was not sent",
            )
        self._trusted = True

    def _check_socket_owner(self, path: Path) -> None:
        # The socket lives in the owner's 0700 run dir and is 0600: a socket file owned by
        # someone else (KILN_API_SOCKET pointing elsewhere) is not our kiln's.
        try:
            owner = path.stat().st_uid
        except FileNotFoundError:
            raise ServerUnreachable(self.endpoint.where) from None
        except OSError as exc:
            raise ServerUnreachable(self.endpoint.where, f"{exc.strerror}") from exc
        if owner != os.geteuid():
            raise NotThisKiln(
                self.endpoint.where,
                f"the socket belongs to uid {owner}, not to you (uid {os.geteuid()}), "
                "so the token was not sent",
            )

    def _auth(self) -> dict[str, str]:
        self._ensure_trusted()
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

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
        authenticated: bool = True,
    ) -> Any:
        headers = self._auth() if authenticated else {}
        with self._mapped_errors():
            response = self._http.request(method, path, json=json, params=params, headers=headers)
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
        headers = {**headers, **self._auth()}
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
        where = self.endpoint.where
        try:
            yield
        except httpx.ConnectError as exc:
            if (why := _certificate_problem(exc)) is not None:
                raise UntrustedCertificate(self.base_url, why) from exc
            raise ServerUnreachable(
                self.base_url if self.endpoint.socket_path is None else where
            ) from exc
        except httpx.TimeoutException as exc:
            raise TemporaryFailure(f"kiln on {where} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise TemporaryFailure(f"lost the connection to kiln on {where}: {exc}") from exc


def _tls_verification(ca_file: Path | None) -> ssl.SSLContext | bool:
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(
            f"KILN_CA={ca_file} cannot be used as a CA file: {exc}; give a PEM certificate"
        ) from exc


def _certificate_problem(exc: BaseException) -> str | None:
    """Why the server's certificate was refused, when that is why the connection failed."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or str(seen)
        if "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def _raise_for_error(response: httpx.Response) -> None:
    if not response.is_error:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    raise error_from_body(response.status_code, body, response.text)
