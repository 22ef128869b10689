"""Images as kiln knows them: what the engine holds, and kiln's catalogue of what it pushed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# Provenance labels ``kiln build`` puts on an image (OCI annotation keys where one exists).
LABEL_SOURCE_COMMIT = "org.opencontainers.image.revision"
LABEL_CREATED = "org.opencontainers.image.created"
LABEL_SOURCE_DIRTY = "io.kiln.build.dirty"
LABEL_SOURCE_HASH = "io.kiln.build.source-hash"
LABEL_BUILDER = "io.kiln.build.builder"
PROVENANCE_LABELS = (
    LABEL_SOURCE_COMMIT,
    LABEL_SOURCE_DIRTY,
    LABEL_SOURCE_HASH,
    LABEL_CREATED,
    LABEL_BUILDER,
)

MOVING_TAG = "latest"
"""The one tag that may move to a new digest: Docker's convention for "whatever is newest".
Every other tag means one digest forever in kiln's catalogue."""


@dataclass(frozen=True, kw_only=True)
class LocalImage:
    """An image on the engine."""

    id: str  # the engine's id: sha256 of the image config
    size: int
    labels: dict[str, str] = field(default_factory=dict)
    repo_digests: tuple[str, ...] = ()  # "host/repo@sha256:…" it was pushed as or pulled by


@dataclass(frozen=True, kw_only=True)
class CatalogueEntry:
    """``repository:tag`` → the manifest digest it means in the registry (immutable but for
    ``latest``), with what kiln knew of the image when it was recorded."""

    repository: str
    tag: str
    digest: str  # "sha256:…" of the manifest
    image_id: str  # the config digest: the same image, whatever engine pushed it
    size: int | None
    labels: dict[str, str]
    created_at: datetime
    created_by: str

    def provenance(self) -> dict[str, str]:
        return {k: v for k, v in self.labels.items() if k in PROVENANCE_LABELS}
