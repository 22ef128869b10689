"""Volumes as kiln sees them: named engine volumes of one app, and snapshots of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kiln.model.app import AppKey


@dataclass(frozen=True, kw_only=True)
class VolumeInfo:
    key: AppKey
    name: str  # as the spec names it
    engine_name: str  # kiln-<installation>-<env>-<app>-<name> on the engine
    created_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """A copy of a volume's files: a tar under $KILN_HOME/snapshots, with its checksum."""

    key: AppKey
    volume: str
    id: str  # e.g. 20261201T012345Z-3f2a
    created_at: datetime
    size: int  # bytes of the tar
    sha256: str
    consistency: str  # "stopped" (no instance ran), "pre_snapshot" (the command ran first) or
    # "read_only" (the release mounts it read-only: its instances cannot write it)
