"""The registry seam: the artifact repository kiln pins releases to.

A release's image is ``host/repository@sha256:…`` of a manifest in this registry: the exact
bytes, whichever engine pulls them. Implementations: ``EmbeddedRegistry`` (the CNCF distribution
registry kiln runs on loopback, supervised like NGINX), ``RemoteRegistry`` (any registry named
in the settings file) and ``FakeRegistry`` (in memory, for tests of the layers above).

Pushing and pulling image bytes is the engine's job (the driver); this seam answers what the
registry holds, deletes manifests and runs the embedded registry's process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


class Registry(Protocol):
    host: str  # what pinned references start with: "127.0.0.1:5000"
    embedded: bool  # kiln runs it (start, supervise, garbage-collect)
    credentials: Credentials | None

    async def start(self) -> None:
        """Start (or adopt) the registry and wait until it answers. A remote one: ping it."""

    async def ensure_running(self) -> bool:
        """Start it when it does not run; True when it had to (what the supervisor asks)."""

    async def is_running(self) -> bool: ...

    async def wait_exited(self) -> None:
        """Return when the embedded registry's process exits (never for a remote one)."""

    async def stop(self) -> None: ...

    async def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest of the manifest ``reference`` (a tag or a digest) names, None if absent."""

    async def image_size(self, repository: str, digest: str) -> int | None:
        """Bytes of the manifest's config and layers as stored (compressed); None if absent."""

    async def delete_manifest(self, repository: str, digest: str) -> bool:
        """Delete a manifest (and so every tag on it); False when it was not there."""

    async def garbage_collect(self) -> str:
        """Remove blobs no manifest references; the collector's summary. Embedded only."""

    async def close(self) -> None: ...
