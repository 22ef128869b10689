"""Wire shapes of promotions, approvals and diffs (see ``routes_promotion``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kiln.api.schemas import MAX_ID, ReleaseOut, RolloutOut, release_out, rollout_out
from kiln.controller.promotion_views import ApprovalView, DiffView, PromotionView, ReleaseRef
from kiln.spec.grammar import NAME_PATTERN


class PromoteReleaseRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"app": "web", "source": "staging", "target": "production"}]
        },
    )
    app: str = Field(pattern=NAME_PATTERN, description="e.g. web")
    source: str = Field(pattern=NAME_PATTERN, description="the environment it comes from")
    target: str = Field(pattern=NAME_PATTERN, description="the next environment in the order")
    release: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="source release; default: the one serving"
    )
    dry_run: bool = Field(default=False, description="evaluate the gates and diff only")
    message: str = Field(default="", max_length=2000, description="why, kept on the release")


class ApproveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    app: str = Field(pattern=NAME_PATTERN)
    environment: str = Field(pattern=NAME_PATTERN, description="the target, e.g. production")
    release: int = Field(ge=1, le=MAX_ID, description="release of the source environment")
    source: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="default: the environment before"
    )
    note: str = Field(default="", max_length=2000)


class FieldChangeOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    path: str
    before: Any
    after: Any


class ReleaseRefOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    environment: str
    app: str
    number: int | None = Field(description="null: no release (not created yet, or none)")
    image: str
    digest: str
    spec_hash: str


class DiffOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    left: ReleaseRefOut
    right: ReleaseRefOut
    identical: bool
    digest_changed: bool
    changes: list[FieldChangeOut]
    secrets: list[FieldChangeOut] = Field(
        description="secret versions that differ (empty until releases carry secrets)"
    )


class GateOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    passed: bool
    detail: str


class PromotionOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    source: ReleaseOut
    environment: str
    app: str
    gates: list[GateOut]
    passed: bool
    diff: DiffOut
    dry_run: bool
    changed: bool
    message: str
    release: ReleaseOut | None
    rollout: RolloutOut | None


class ApprovalOut(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: int
    environment: str
    app: str
    source_environment: str
    source_release: int
    digest: str
    approved_by: str
    approved_at: datetime
    note: str
    required: bool
    message: str


def _ref_out(ref: ReleaseRef) -> ReleaseRefOut:
    return ReleaseRefOut(
        environment=ref.key.environment,
        app=ref.key.app,
        number=ref.number,
        image=ref.image,
        digest=ref.digest,
        spec_hash=ref.spec_hash,
    )


def diff_out(view: DiffView) -> DiffOut:
    return DiffOut(
        left=_ref_out(view.left),
        right=_ref_out(view.right),
        identical=view.identical,
        digest_changed=view.digest_changed,
        changes=[FieldChangeOut(path=c.path, before=c.before, after=c.after) for c in view.changes],
        secrets=[FieldChangeOut(path=c.path, before=c.before, after=c.after) for c in view.secrets],
    )


def promotion_out(view: PromotionView) -> PromotionOut:
    return PromotionOut(
        source=release_out(view.source),
        environment=view.target.environment,
        app=view.target.app,
        gates=[GateOut(name=g.name, passed=g.passed, detail=g.detail) for g in view.gates],
        passed=view.passed,
        diff=diff_out(view.diff),
        dry_run=view.dry_run,
        changed=view.changed,
        message=view.message,
        release=release_out(view.release) if view.release else None,
        rollout=rollout_out(view.rollout) if view.rollout else None,
    )


def approval_out(view: ApprovalView) -> ApprovalOut:
    a = view.approval
    return ApprovalOut(
        id=a.id,
        environment=a.key.environment,
        app=a.key.app,
        source_environment=a.source_environment,
        source_release=a.source_release,
        digest=a.digest,
        approved_by=a.approved_by,
        approved_at=a.approved_at,
        note=a.note,
        required=view.required,
        message=view.message,
    )
