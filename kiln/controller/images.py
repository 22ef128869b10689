"""Images between the engine and the artifact repository: pin a spec's image to the registry
digest a release holds, pull a pinned image an engine lacks, build and push (``kiln build``).

    spec image ──▶ pin_image ─┬─ host/repo@sha256:… in our registry ─▶ check the registry has it
                              ├─ host/repo:tag in our registry       ─▶ its digest there
                              └─ an image on the engine (today's workflow: kiln-demo:v1)
                                    catalogue says repo:tag = this image? ─▶ that digest (no push)
                                    else: push to registry/repo:tag ─▶ record repo:tag → digest
                                          (a different image under a recorded tag: Conflict)

A release holds ``host/repository@sha256:…`` of the manifest: the exact bytes, on any engine.
Without a registry (tests over fakes that pass none) it holds the engine-local id, as before.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from kiln.controller.runtime import ControlPlane
from kiln.errors import ImageNotFound, InvalidInput
from kiln.model import AppKey, EventKind, Severity
from kiln.model.image import MOVING_TAG, CatalogueEntry, LocalImage
from kiln.registry.base import Registry
from kiln.registry.reference import ImageReference, parse_reference, pinned_parts
from kiln.store.catalogue import tag_conflict


@dataclass(frozen=True)
class Pinned:
    reference: str  # host/repository@sha256:… (or the engine id without a registry)
    pushed: bool  # this call pushed it


def registry_auth(registry: Registry | None) -> tuple[str, str] | None:
    if registry is None or registry.credentials is None:
        return None
    return (registry.credentials.username, registry.credentials.password)


async def pin_image(plane: ControlPlane, image: str, *, key: AppKey | None, who: str) -> Pinned:
    registry = plane.registry
    if registry is None:
        return Pinned(await plane.driver.resolve_image(image), pushed=False)
    ref = parse_reference(image)
    if ref is not None and ref.host == registry.host:
        return Pinned(await _in_registry(registry, ref, image), pushed=False)
    if ref is not None and ref.host is not None and ref.digest is not None:
        # Pinned in another registry: kiln pulls it from there, it need not be ours.
        return Pinned(image, pushed=False)
    local = await plane.driver.image_details(image)
    repository, tag = _repository_and_tag(ref, local, key)
    known = plane.store.images.get(repository, tag)
    if known is not None and known.image_id == local.id:
        if await registry.manifest_digest(repository, known.digest) is not None:
            return Pinned(f"{registry.host}/{repository}@{known.digest}", pushed=False)
        plane.store.images.forget(repository, known.digest)  # pruned: push it again
    elif known is not None and tag != MOVING_TAG:
        # Refused before the push, so the registry's tag never moves either.
        raise tag_conflict(known, f"the image {local.id} on the engine")
    digest = await plane.driver.push_image(
        image, repository=f"{registry.host}/{repository}", tag=tag, auth=registry_auth(registry)
    )
    size = await registry.image_size(repository, digest)
    plane.store.images.record(
        CatalogueEntry(
            repository=repository,
            tag=tag,
            digest=digest,
            image_id=local.id,
            size=size,
            labels=local.labels,
            created_at=plane.clock(),
            created_by=who,
        )
    )
    plane.events.record(
        key,
        EventKind.IMAGE_PUSHED,
        f"{who} pushed {image} to the registry as {registry.host}/{repository}:{tag} ({digest})",
    )
    return Pinned(f"{registry.host}/{repository}@{digest}", pushed=True)


async def _in_registry(registry: Registry, ref: ImageReference, image: str) -> str:
    reference = ref.digest or ref.tag or MOVING_TAG
    digest = await registry.manifest_digest(ref.repository, reference)
    if digest is None:
        raise ImageNotFound(
            f"the registry at {registry.host} has no {image}: `kiln build` or push it first"
            " (`kiln images` lists what it holds)"
        )
    return f"{registry.host}/{ref.repository}@{digest}"


def _repository_and_tag(
    ref: ImageReference | None, local: LocalImage, key: AppKey | None
) -> tuple[str, str]:
    """Where an engine image goes in the registry: its own name and tag; an image named only
    by id or digest goes under the app's name, tagged with its id."""
    if ref is not None and ref.tag is not None:
        return ref.repository, ref.tag
    short = "id-" + local.id.removeprefix("sha256:")[:12]
    if ref is not None:
        return ref.repository, MOVING_TAG if ref.digest is None else short
    if key is None:
        raise InvalidInput(f"name the image {local.id} with a repository:tag to push it")
    return key.app, short


class Puller:
    """Pulls pinned images an engine lacks, one pull per reference at a time, with events."""

    def __init__(self, plane: ControlPlane) -> None:
        self._plane = plane
        self._pulls: dict[str, asyncio.Task[None]] = {}

    async def ensure(self, key: AppKey, reference: str, release: int) -> bool:
        """Pull ``reference`` when it is pinned in a registry; False when it is not pullable
        (an engine-local id: nothing to pull from)."""
        if pinned_parts(reference) is None:
            return False
        task = self._pulls.get(reference)
        if task is None:
            task = asyncio.create_task(self._pull(key, reference, release))
            self._pulls[reference] = task
            task.add_done_callback(lambda _: self._pulls.pop(reference, None))
        await asyncio.shield(task)
        return True

    async def _pull(self, key: AppKey, reference: str, release: int) -> None:
        plane = self._plane
        plane.events.record(
            key,
            EventKind.IMAGE_PULLING,
            f"pulling {reference} for release {release}: the engine does not have it",
            release=release,
        )
        layers: list[str] = []
        try:
            await plane.driver.pull_image(
                reference, auth=registry_auth(plane.registry), progress=layers.append
            )
        except ImageNotFound as exc:
            plane.events.record(
                key,
                EventKind.IMAGE_PULL_FAILED,
                exc.message,
                severity=Severity.ERROR,
                release=release,
            )
            raise
        done = sum(1 for line in layers if line.endswith("Pull complete"))
        plane.events.record(
            key,
            EventKind.IMAGE_PULLED,
            f"pulled {reference} ({done} layer(s) downloaded)",
            release=release,
        )
