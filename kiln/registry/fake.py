"""``FakeRegistry``: the registry seam in memory, for tests of everything above it.

Knobs: ``put(repository, digest, size=…, tags=…)`` as if an engine pushed it (the fake driver
does this on ``push_image``), ``running`` and ``exit()`` to act out a crash, ``collected`` counts
garbage collections.
"""

from __future__ import annotations

import asyncio

from kiln.errors import RegistryUnavailable
from kiln.registry.base import Credentials


class FakeRegistry:
    embedded = True
    credentials: Credentials | None = None

    def __init__(self, host: str = "registry.fake:5000") -> None:
        self.host = host
        self.manifests: dict[tuple[str, str], int] = {}  # (repository, digest) → size
        self.tags: dict[tuple[str, str], str] = {}  # (repository, tag) → digest
        self.running = False
        self.starts = 0
        self.collected = 0
        self._exited = asyncio.Event()

    def put(
        self, repository: str, digest: str, *, size: int = 1024, tag: str | None = None
    ) -> None:
        self.manifests[(repository, digest)] = size
        if tag:
            self.tags[(repository, tag)] = digest

    def exit(self) -> None:
        self.running = False
        self._exited.set()

    def _check(self) -> None:
        if not self.running:
            raise RegistryUnavailable(f"the registry at {self.host} does not answer (fake, down)")

    async def start(self) -> None:
        if not self.running:
            self.running = True
            self.starts += 1
            self._exited = asyncio.Event()

    async def ensure_running(self) -> bool:
        if self.running:
            return False
        await self.start()
        return True

    async def is_running(self) -> bool:
        return self.running

    async def wait_exited(self) -> None:
        if self.running:
            await self._exited.wait()

    async def stop(self) -> None:
        self.exit()

    async def manifest_digest(self, repository: str, reference: str) -> str | None:
        self._check()
        if reference.startswith("sha256:"):
            return reference if (repository, reference) in self.manifests else None
        return self.tags.get((repository, reference))

    async def image_size(self, repository: str, digest: str) -> int | None:
        self._check()
        return self.manifests.get((repository, digest))

    async def delete_manifest(self, repository: str, digest: str) -> bool:
        self._check()
        for tag_key in [k for k, v in self.tags.items() if k[0] == repository and v == digest]:
            del self.tags[tag_key]
        return self.manifests.pop((repository, digest), None) is not None

    async def garbage_collect(self) -> str:
        self.collected += 1
        return "0 blobs eligible for deletion (fake)"

    async def close(self) -> None:
        return None
