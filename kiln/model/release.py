"""Releases: immutable, numbered, append-only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from kiln.model.app import AppKey
from kiln.spec import AppSpec


class ReleaseOrigin(StrEnum):
    DEPLOY = "deploy"
    ROLLBACK = "rollback"


@dataclass(frozen=True, kw_only=True)
class Release:
    """One immutable release. ``digest`` is what instances run; ``image`` is what the user wrote.

    A release is never edited. Its outcome (did its rollout succeed?) lives on the rollout.
    """

    key: AppKey
    number: int
    image: str
    digest: str
    spec: AppSpec
    spec_hash: str
    created_at: datetime
    created_by: str
    message: str
    origin: ReleaseOrigin = ReleaseOrigin.DEPLOY
    rollback_of: int | None = None

    def __post_init__(self) -> None:
        if not self.digest.startswith("sha256:") and "@sha256:" not in self.digest:
            raise ValueError(f"a release pins its image by digest, got {self.digest!r}")
        if self.number < 1:
            raise ValueError(f"release numbers start at 1, got {self.number}")
