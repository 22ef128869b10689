"""Releases: immutable, numbered, append-only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from kiln.model.app import AppKey
from kiln.spec import AppSpec


class ReleaseOrigin(StrEnum):
    DEPLOY = "deploy"
    ROLLBACK = "rollback"
    PROMOTION = "promotion"  # the source environment's release: same digest, same base spec


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
    # The version of each secret the spec names, pinned when the release was made: a secret
    # changes only through a new release, and a rollback brings the old versions back.
    secret_versions: dict[str, int] = field(default_factory=dict, hash=False)
    # The spec as written, before the environment's overrides (``kiln.spec.for_environment``):
    # a promotion applies the next environment's overrides to it. None for a release made
    # before kiln knew environments (its ``spec`` is its base too).
    base_spec: AppSpec | None = None

    @property
    def base(self) -> AppSpec:
        return self.base_spec if self.base_spec is not None else self.spec

    def __post_init__(self) -> None:
        if not self.digest.startswith("sha256:") and "@sha256:" not in self.digest:
            raise ValueError(f"a release pins its image by digest, got {self.digest!r}")
        if self.number < 1:
            raise ValueError(f"release numbers start at 1, got {self.number}")
