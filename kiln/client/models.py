"""What the kiln API answers, as the client sees it: small frozen pydantic models.

Defined here rather than imported from ``kiln.api`` so the client (and the CLI above it) can
talk to a kiln server without loading the server's code. Unknown fields are ignored, so an
older client keeps working against a newer server.

Here: what the quick reads answer (status, ps, releases, events, logs, identity); the answers
of the other commands are in ``kiln.client.command_models``, so a read does not define them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kiln.model import AppKey


class _Model(BaseModel):
    # defer_build: a model's validator is built when it first validates, not at import —
    # a command pays only for the answers it reads (kiln/cli/README.md, "Start-up").
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)


class _AppScoped(_Model):
    environment: str
    app: str

    @property
    def key(self) -> AppKey:
        return AppKey(self.environment, self.app)


class Health(_Model):
    ok: bool
    version: str


class IdentityAnswer(_Model):
    """``POST /v1/identify``'s answer on the wire."""

    installation_id: str | None = Field(default=None, max_length=64)
    version: str = Field(max_length=100)
    # None: the server knows no active token with the id the client sent (revoked, or not
    # this kiln's).
    proof: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class Identity(_Model):
    """Who the server says it is, and whether it proved it holds this client's token."""

    installation_id: str | None
    version: str
    proven: bool
    token_known: bool = True  # False: the server said it knows no such active token


class Instance(_Model):
    id: str
    release: int
    container_id: str
    status: str
    ready: bool
    in_router: bool
    draining: bool
    address: str | None = None
    started_at: datetime | None = None
    exit_code: int | None = None
    last_error: str | None = None


class Rollout(_AppScoped):
    id: int
    from_release: int | None = None
    to_release: int
    strategy: str
    state: str  # in_progress | succeeded | failed | aborted | superseded
    started_at: datetime
    deadline_at: datetime
    finished_at: datetime | None = None
    reason: str = ""
    kind: str = "deploy"  # deploy | switch_back | retry
    step: int = 0  # canary: index into the steps; blue-green: 0 preview, 1 promoted
    paused: bool = False
    pause_reason: str = ""
    promote_requested: bool = False
    failing: int = 0  # analysis windows in a row with that verdict
    inconclusive: int = 0
    windows: int = 0  # analysis windows judged so far
    last_verdict: str = ""  # "pass: ..." | "fail: ..." | "inconclusive: ..."

    @property
    def finished(self) -> bool:
        return self.state != "in_progress"


class AppStatus(_AppScoped):
    state: str
    scale: int
    stopped: bool
    target_release: int | None = None
    stable_release: int | None = None
    ready: int
    instances: list[Instance] = Field(default_factory=list)
    rollout: Rollout | None = None
    urls: list[str] = Field(default_factory=list)
    message: str = ""
    quiet: bool = False  # no requests lately: health checks every idle_interval


class Release(_AppScoped):
    number: int
    image: str
    digest: str
    spec_hash: str
    created_at: datetime
    created_by: str
    message: str = ""
    origin: str = "deploy"
    rollback_of: int | None = None
    result: str = ""
    result_reason: str = ""
    spec: dict[str, Any] = Field(default_factory=dict)
    secrets: dict[str, int] = Field(default_factory=dict)  # name → pinned version


class Event(_Model):
    id: int
    at: datetime
    environment: str | None = None
    app: str | None = None
    kind: str  # a kiln.model.EventKind value; a str so a newer server's kinds still read
    category: str = ""
    reason: str
    severity: str = "info"
    release: int | None = None
    instance: str | None = None

    @property
    def key(self) -> AppKey | None:
        if self.environment is None or self.app is None:
            return None
        return AppKey(self.environment, self.app)


class LogLine(_Model):
    instance: str
    at: datetime | None = None
    stream: str = "stdout"  # stdout | stderr | access (an NGINX access line)
    text: str
    release: int | None = None
