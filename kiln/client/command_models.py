"""The answers of the commands that change things or look deeper (deploy, secrets, tokens,
audit, drift, images, volumes, ``kiln rollout status``), as the client sees them.

Apart from ``kiln.client.models`` (what the quick reads need: status, ps, releases, events,
logs, identity) so that a read does not define these (~5 ms; kiln/cli/README.md, "Start-up").
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from kiln.client.models import Release, Rollout, _AppScoped, _Model


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
