"""What the kiln API answers, as the client sees it: small frozen pydantic models.

Defined here rather than imported from ``kiln.api`` so the client (and the CLI above it) can
talk to a kiln server without loading the server's code. Unknown fields are ignored, so an
older client keeps working against a newer server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kiln.model import AppKey


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


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
    proof: str = Field(pattern=r"^[0-9a-f]{64}$")


class Identity(_Model):
    """Who the server says it is, and whether it proved it holds this client's token."""

    installation_id: str | None
    version: str
    proven: bool


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
    state: str  # in_progress | succeeded | failed | superseded
    started_at: datetime
    deadline_at: datetime
    finished_at: datetime | None = None
    reason: str = ""

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


class DeployResult(_Model):
    release: Release
    rollout: Rollout | None = None
    changed: bool
    message: str = ""


class Event(_Model):
    id: int
    at: datetime
    environment: str | None = None
    app: str | None = None
    kind: str
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
    stream: str = "stdout"
    text: str
