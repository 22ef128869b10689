"""The API's wire shapes: pydantic models built from the controller's dataclass views.

The views stay plain dataclasses (the controller knows nothing of HTTP); these models give the
OpenAPI document its schemas and fix the JSON field names. ``*_out`` functions convert.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kiln.controller.views import (
    AppStatus,
    DeployResult,
    GroupView,
    InstanceView,
    ReleaseTrafficView,
    ReleaseView,
    RolloutView,
)
from kiln.logs import ArchivedLine
from kiln.model import Event, EventKind, Release, Rollout
from kiln.spec import MAX_INSTANCES, MAX_SPEC_BYTES
from kiln.spec.grammar import NAME_PATTERN

MAX_ID = 2**53 - 1
"""The largest id or release number the API takes: every JSON parser reads it exactly (it is
JavaScript's Number.MAX_SAFE_INTEGER, and a double holds it), and it is well inside the
store's signed 64-bit INTEGER, so a huge number is a 422, never an overflow in the store."""


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- requests ------------------------------------------------------------------------------


EXAMPLE_SPEC = "app: web\nenvironment: dev\nimage: example/web:1\nport: 8080\ninstances: 2\n"


class DeployRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"spec": EXAMPLE_SPEC, "message": "first deploy"}]},
    )
    spec: str = Field(
        description=f"the kiln.yaml text, at most {MAX_SPEC_BYTES // 1024} KiB; its content is "
        "checked against GET /v1/schema (422 spec_invalid with every problem)"
    )
    message: str = Field(default="", max_length=2000, description="why, kept on the release")
    environment: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="deploy into this environment instead of the spec's `environment`; the "
        "spec's `environments` entry for it applies",
    )


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="release number; default the previous"
    )
    message: str = Field(default="", max_length=2000)


class ScaleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: int = Field(
        ge=0, le=MAX_INSTANCES, description="desired number of instances (the spec's own limit)"
    )


class IdentifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nonce: str = Field(
        pattern=r"^[0-9a-f]{32,128}$",
        description="fresh random hex from the client (at least 16 bytes), never reused",
    )
    token_id: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{32}$",
        description="kiln.config.token_id(token) of the client's token (names no secret); "
        "omitted: the home's token (KILN_HOME/token)",
    )


# --- responses -----------------------------------------------------------------------------


class IdentityOut(_Out):
    installation_id: str | None = Field(
        description="this kiln installation's id (32 hex digits); null when the server was "
        "started without one"
    )
    version: str
    proof: str | None = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="hex HMAC-SHA256 keyed with the stored hash of the token over "
        "'kiln-identify-v2:' + nonce: only a server that knows the token can answer it; null "
        "when this server knows no active token with that token_id",
    )


class HealthOut(_Out):
    ok: bool
    version: str


class ErrorDetail(_Out):
    type: str = Field(description="snake_case kiln.errors class, e.g. not_found, spec_invalid")
    message: str
    problems: list[str] = Field(default_factory=list)


class ErrorOut(_Out):
    error: ErrorDetail


class InstanceOut(_Out):
    id: str
    release: int
    container_id: str
    status: str
    ready: bool
    in_router: bool
    draining: bool
    address: str | None
    started_at: datetime | None
    exit_code: int | None
    last_error: str | None


class RolloutOut(_Out):
    id: int
    environment: str
    app: str
    from_release: int | None
    to_release: int
    strategy: str
    state: str
    started_at: datetime
    deadline_at: datetime
    finished_at: datetime | None
    reason: str
    kind: str = Field(default="deploy", description="deploy | switch_back | retry")
    step: int = Field(
        default=0,
        description="canary: index into the steps (= their count while promoting to all "
        "traffic); blue-green: 0 preview, 1 promoted; rolling and recreate: 0",
    )
    paused: bool = False
    pause_reason: str = ""
    promote_requested: bool = Field(
        default=False, description="`kiln promote` asked to go on; the next round does it"
    )
    failing: int = Field(default=0, description="failing analysis windows in a row")
    inconclusive: int = Field(default=0, description="inconclusive analysis windows in a row")
    windows: int = Field(default=0, description="analysis windows judged so far")
    last_verdict: str = Field(
        default="", description="the last window's verdict and why, e.g. 'pass: 0.2% errors'"
    )


class AppStatusOut(_Out):
    environment: str
    app: str
    state: str
    scale: int
    stopped: bool
    target_release: int | None
    stable_release: int | None
    ready: int
    instances: list[InstanceOut]
    rollout: RolloutOut | None
    urls: list[str]
    message: str
    quiet: bool = Field(
        description="NGINX counted no request for this app lately (settings: health.quiet_after):"
        " its instances are checked every health.idle_interval until requests come"
    )


class ReleaseOut(_Out):
    environment: str
    app: str
    number: int
    image: str
    digest: str
    spec_hash: str
    created_at: datetime
    created_by: str
    message: str
    origin: str
    rollback_of: int | None
    result: str = Field(default="", description="current | succeeded | failed | superseded ...")
    result_reason: str = ""
    spec: dict[str, Any]
    secrets: dict[str, int] = Field(
        default_factory=dict,
        description="the version of each secret this release pins (never a value)",
    )


class DeployResultOut(_Out):
    release: ReleaseOut
    rollout: RolloutOut | None
    changed: bool
    message: str


class EventOut(_Out):
    id: int
    at: datetime
    environment: str | None
    app: str | None
    kind: EventKind
    category: str = Field(description="the kind's first part: rollout, instance, router, ...")
    reason: str
    severity: str
    release: int | None
    instance: str | None


class LogLineOut(_Out):
    instance: str
    at: datetime | None
    stream: Literal["stdout", "stderr", "access"]  # access: an NGINX access line (router=true)
    text: str
    release: int | None = None


# --- conversions ---------------------------------------------------------------------------


def instance_out(view: InstanceView) -> InstanceOut:
    return InstanceOut(
        id=view.id,
        release=view.release,
        container_id=view.container_id,
        status=view.status,
        ready=view.ready,
        in_router=view.in_router,
        draining=view.draining,
        address=view.address,
        started_at=view.started_at,
        exit_code=view.exit_code,
        last_error=view.last_error,
    )


def rollout_out(rollout: Rollout) -> RolloutOut:
    return RolloutOut(
        id=rollout.id,
        environment=rollout.key.environment,
        app=rollout.key.app,
        from_release=rollout.from_release,
        to_release=rollout.to_release,
        strategy=str(rollout.strategy),
        state=str(rollout.state),
        started_at=rollout.started_at,
        deadline_at=rollout.deadline_at,
        finished_at=rollout.finished_at,
        reason=rollout.reason,
        kind=str(rollout.kind),
        step=rollout.progress.step,
        paused=rollout.progress.paused,
        pause_reason=rollout.progress.pause_reason,
        promote_requested=rollout.progress.promote or rollout.progress.promote_full,
        failing=rollout.progress.failing,
        inconclusive=rollout.progress.inconclusive,
        windows=rollout.progress.windows,
        last_verdict=rollout.progress.last_verdict,
    )


def app_status_out(view: AppStatus) -> AppStatusOut:
    return AppStatusOut(
        environment=view.key.environment,
        app=view.key.app,
        state=view.state,
        scale=view.scale,
        stopped=view.stopped,
        target_release=view.target_release,
        stable_release=view.stable_release,
        ready=view.ready,
        instances=[instance_out(i) for i in view.instances],
        rollout=rollout_out(view.rollout) if view.rollout else None,
        urls=list(view.urls),
        message=view.message,
        quiet=view.quiet,
    )


def release_out(release: Release, *, result: str = "", result_reason: str = "") -> ReleaseOut:
    return ReleaseOut(
        environment=release.key.environment,
        app=release.key.app,
        number=release.number,
        image=release.image,
        digest=release.digest,
        spec_hash=release.spec_hash,
        created_at=release.created_at,
        created_by=release.created_by,
        message=release.message,
        origin=str(release.origin),
        rollback_of=release.rollback_of,
        result=result,
        result_reason=result_reason,
        spec=release.spec.model_dump(mode="json"),
        secrets=dict(release.secret_versions),
    )


def release_view_out(view: ReleaseView) -> ReleaseOut:
    return release_out(view.release, result=view.result, result_reason=view.result_reason)


def deploy_result_out(result: DeployResult) -> DeployResultOut:
    return DeployResultOut(
        release=release_out(result.release),
        rollout=rollout_out(result.rollout) if result.rollout else None,
        changed=result.changed,
        message=result.message,
    )


def event_out(event: Event) -> EventOut:
    return EventOut(
        id=event.id,
        at=event.at,
        environment=event.key.environment if event.key else None,
        app=event.key.app if event.key else None,
        kind=event.kind,
        category=event.kind.category,
        reason=event.reason,
        severity=str(event.severity),
        release=event.release,
        instance=event.instance,
    )


def log_line_out(line: ArchivedLine) -> LogLineOut:
    stream = line.stream if line.stream in ("stdout", "stderr", "access") else "stdout"
    return LogLineOut(
        instance=line.instance,
        at=line.at,
        stream=stream,  # type: ignore[arg-type]
        text=line.text,
        release=line.release or None,
    )


# --- rollouts (kiln rollout status, promote, pause, resume, abort, retry) ------------------


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    full: bool = Field(
        default=False,
        description="canary: all traffic now, skipping the steps left (blue-green always "
        "switches all traffic)",
    )


class GroupOut(_Out):
    release: int
    role: str = Field(description="stable | next | canary | green | warm | held")
    size: int | None = Field(description="instances wanted; null: kept as they are")
    share: int | None = Field(
        description="percent of requests; null: one pool with the other releases (rolling)"
    )
    ready: int = Field(description="ready instances of this release")
    preview: bool = Field(
        description="reachable through the preview header before it takes traffic"
    )


class ReleaseTrafficOut(_Out):
    release: int
    requests: int
    errors: int
    error_rate: float = Field(description="errors / requests, 0..1")
    p95_ms: float | None = Field(description="95th percentile latency; null without requests")


class RolloutViewOut(_Out):
    environment: str
    app: str
    rollout: RolloutOut | None = Field(description="the active rollout, else the latest one")
    active: bool
    status: str = Field(description="one line: step, weights, what it waits for")
    steps: list[int] = Field(description="canary: the weight of each step, in order")
    groups: list[GroupOut] = Field(description="the release groups as the last round planned")
    traffic: list[ReleaseTrafficOut] = Field(
        description="per release, in the current analysis window (or since NGINX started)"
    )
    warm_release: int | None = Field(description="the previous release, kept warm for a rollback")
    warm_until: datetime | None = Field(description="when the warm release is let go")
    held_release: int | None = Field(
        description="a failed or aborted release kept for inspection until the next deploy"
    )


def group_out(view: GroupView) -> GroupOut:
    return GroupOut(
        release=view.release,
        role=view.role,
        size=view.size,
        share=view.share,
        ready=view.ready,
        preview=view.preview,
    )


def release_traffic_out(view: ReleaseTrafficView) -> ReleaseTrafficOut:
    return ReleaseTrafficOut(
        release=view.release,
        requests=view.requests,
        errors=view.errors,
        error_rate=view.error_rate,
        p95_ms=view.p95_ms,
    )


def rollout_view_out(view: RolloutView) -> RolloutViewOut:
    return RolloutViewOut(
        environment=view.key.environment,
        app=view.key.app,
        rollout=rollout_out(view.rollout) if view.rollout else None,
        active=view.active,
        status=view.status,
        steps=list(view.steps),
        groups=[group_out(g) for g in view.groups],
        traffic=[release_traffic_out(t) for t in view.traffic],
        warm_release=view.warm_release,
        warm_until=view.warm_until,
        held_release=view.held_release,
    )
