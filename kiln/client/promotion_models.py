"""Promotions, approvals and diffs as the client sees them (mirrors ``kiln.api``'s shapes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kiln.client.models import Release, Rollout


class _Model(BaseModel):
    # defer_build: a model's validator is built when it first validates, not at import —
    # a command pays only for the answers it reads (kiln/cli/README.md, "Start-up").
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)


class FieldChange(_Model):
    path: str
    before: Any = None
    after: Any = None


class ReleaseRef(_Model):
    environment: str
    app: str
    number: int | None = None
    image: str = ""
    digest: str = ""
    spec_hash: str = ""


class Diff(_Model):
    left: ReleaseRef
    right: ReleaseRef
    identical: bool
    digest_changed: bool
    changes: list[FieldChange] = Field(default_factory=list)
    secrets: list[FieldChange] = Field(default_factory=list)


class Gate(_Model):
    name: str
    passed: bool
    detail: str = ""


class Promotion(_Model):
    source: Release
    environment: str
    app: str
    gates: list[Gate] = Field(default_factory=list)
    passed: bool
    diff: Diff
    dry_run: bool
    changed: bool
    message: str = ""
    release: Release | None = None
    rollout: Rollout | None = None


class Approval(_Model):
    id: int
    environment: str
    app: str
    source_environment: str
    source_release: int
    digest: str
    approved_by: str
    approved_at: datetime
    note: str = ""
    required: bool = False
    message: str = ""
