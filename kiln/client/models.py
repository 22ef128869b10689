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


class DeployResult(_Model):
    release: Release
    rollout: Rollout | None = None
    changed: bool
    message: str = ""


class Secret(_Model):
    name: str
    version: int
    versions: int
    created_at: datetime
    created_by: str
    in_use: int | None = None


class SecretSet(_Model):
    name: str
    version: int
    changed: bool
    deploy: DeployResult | None = None
    message: str = ""


class KeyRotation(_Model):
    key_id: str
    reencrypted: int
    retired: list[str] = Field(default_factory=list)
    unused_env_keys: list[str] = Field(default_factory=list)


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


class Group(_Model):
    """One release group as the server's last round planned it."""

    release: int
    role: str  # stable | next | canary | green | warm | held
    size: int | None = None  # instances wanted; None: kept as they are
    share: int | None = None  # percent of requests; None: one pool with the others (rolling)
    ready: int = 0
    preview: bool = False


class ReleaseTraffic(_Model):
    """A release's requests in the current analysis window (or since NGINX started)."""

    release: int
    requests: int = 0
    errors: int = 0
    error_rate: float = 0.0
    p95_ms: float | None = None


class RolloutView(_AppScoped):
    """``kiln rollout status``: the rollout in progress (or the last one) and its traffic."""

    rollout: Rollout | None = None
    active: bool = False
    status: str = ""
    steps: list[int] = Field(default_factory=list)  # canary weights, in order
    groups: list[Group] = Field(default_factory=list)
    traffic: list[ReleaseTraffic] = Field(default_factory=list)
    warm_release: int | None = None
    warm_until: datetime | None = None
    held_release: int | None = None


class Token(_Model):
    """An API token as ``kiln token ls`` shows it: never the token itself."""

    name: str
    role: str
    environments: list[str] = Field(default_factory=list)  # empty: every environment
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None


class NewToken(Token):
    token: str  # shown once; the server keeps only a hash


class AuditEntry(_Model):
    id: int
    at: datetime
    token: str | None
    peer: str
    claimed: str = ""
    method: str
    path: str
    environment: str | None = None
    app: str | None = None
    status: int
    outcome: str
    release: int | None = None
    detail: str = ""


class DriftFinding(_AppScoped):
    """One instance (or app) that differs from its release, as ``GET /v1/drift`` says."""

    kind: str  # drifted | unowned | missing
    instance: str | None = None
    release: int | None = None
    container_id: str | None = None
    details: list[str] = Field(default_factory=list)
    action: str  # replace | report | remove | start


class DriftReport(_Model):
    checked_at: datetime
    checked: int
    findings: list[DriftFinding] = Field(default_factory=list)


class BuiltImage(_Model):
    """``POST /v1/images/build``: the pushed image, pinned."""

    reference: str
    repository: str
    tag: str
    digest: str
    image_id: str
    size: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    cached: bool = False
    pushed: bool = False


class ImageEntry(_Model):
    """One tag of kiln's image catalogue (``GET /v1/images``)."""

    repository: str
    tag: str
    digest: str
    reference: str
    size: int | None = None
    image_id: str = ""
    provenance: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    created_by: str = ""
    releases: list[str] = Field(default_factory=list)
    running: list[str] = Field(default_factory=list)


class PruneReport(_Model):
    removed: list[ImageEntry]
    kept: list[ImageEntry]
    collected: str
    dry_run: bool


class VolumeSnapshot(_Model):
    id: str
    volume: str
    created_at: datetime
    size: int
    sha256: str
    consistency: str


class Volume(_Model):
    environment: str
    app: str
    name: str
    engine_name: str
    created_at: datetime | None = None
    used_by: list[int] = Field(default_factory=list)
    snapshots: list[VolumeSnapshot] = Field(default_factory=list)


class CopyProgress(_Model):
    bytes: int
    total: int | None = None
