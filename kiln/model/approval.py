"""Approvals: a person's yes to promoting one release into one environment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kiln.model.app import AppKey


@dataclass(frozen=True, kw_only=True)
class Approval:
    """``kiln approve web --env production --release 4``: release 4 of ``source_environment``
    (the environment before ``key.environment``) may be promoted into ``key``. It names the
    digest and spec hash it approved, so a different release with the same number (an app
    destroyed and deployed again) is not approved by it. Append-only, like releases."""

    id: int
    key: AppKey  # the target: production/web
    source_environment: str
    source_release: int
    digest: str
    spec_hash: str
    approved_by: str
    approved_at: datetime
    note: str = ""
