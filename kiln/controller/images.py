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
import functools
from dataclasses import dataclass
from datetime import datetime

from kiln.controller.runtime import ControlPlane
from kiln.errors import ImageNotFound, InvalidInput
from kiln.model import AppKey, EventKind, Severity
from kiln.model.image import LABEL_SOURCE_HASH, MOVING_TAG, CatalogueEntry, LocalImage
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
    # One push per image and tag at a time: deploys of one image at once share the first one's
    # push (a registry answers concurrent pushes of the same blobs with errors), and get what
    # it pinned. The flight runs in its own task, so a caller that goes away does not cut it.
    flight = (repository, tag, local.id)
    running = plane.image_pushes.get(flight)
    if running is not None:
        reference, _pushed = await asyncio.shield(running)
        return Pinned(reference, pushed=False)  # the push was the other caller's
    task = asyncio.create_task(
        _pin_local(plane, image, local, repository, tag, key=key, who=who),
        name=f"pin {repository}:{tag}",
    )
    plane.image_pushes[flight] = task
    task.add_done_callback(functools.partial(_landed, plane.image_pushes, flight))
    reference, pushed = await asyncio.shield(task)
    return Pinned(reference, pushed=pushed)


def _landed(
    flights: dict[tuple[str, str, str], asyncio.Task[tuple[str, bool]]],
    flight: tuple[str, str, str],
    task: asyncio.Task[tuple[str, bool]],
) -> None:
    if flights.get(flight) is task:
        del flights[flight]
    if not task.cancelled():
        task.exception()  # retrieved: every caller may have gone (each got it, or went away)


async def _pin_local(
    plane: ControlPlane,
    image: str,
    local: LocalImage,
    repository: str,
    tag: str,
    *,
    key: AppKey | None,
    who: str,
) -> tuple[str, bool]:
    """The digest of an engine image in the registry, pushed there unless the catalogue
    and the registry have it already: (host/repository@digest, whether this pushed it)."""
    registry = plane.registry
    assert registry is not None
    known = await plane.store.images.get(repository, tag)
    if known is not None and known.image_id == local.id:
        if await registry.manifest_digest(repository, known.digest) is not None:
            return f"{registry.host}/{repository}@{known.digest}", False
        await plane.store.images.forget(repository, known.digest)  # pruned: push it again
    elif known is not None and tag != MOVING_TAG:
        # Refused before the push, so the registry's tag never moves either.
        raise tag_conflict(known, f"the image {local.id} on the engine")
    digest = await plane.driver.push_image(
        image, repository=f"{registry.host}/{repository}", tag=tag, auth=registry_auth(registry)
    )
    size = await registry.image_size(repository, digest)
    await plane.store.images.record(
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
    return f"{registry.host}/{repository}@{digest}", True


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


@dataclass(frozen=True)
class BuildResult:
    reference: str  # host/repository@sha256:… — what a spec's image: can say
    repository: str
    tag: str
    digest: str
    image_id: str
    size: int | None
    labels: dict[str, str]
    cached: bool  # the same source was built and pushed before: nothing was built
    pushed: bool


async def build_image(
    plane: ControlPlane,
    context: bytes,
    *,
    repository: str,
    tag: str,
    labels: dict[str, str],
    dockerfile: str,
    who: str,
) -> BuildResult:
    """Build the uploaded context on the engine, push it, record its tag.

    The same source (``LABEL_SOURCE_HASH``: the client's hash of the context, the Dockerfile
    name and the labels) under a tag already recorded is the same image: kiln answers the
    recorded digest at once, without building (what makes a rebuild of unchanged input near
    instant). A recorded tag with another source is refused before anything is built.
    """
    registry = plane.registry
    if registry is None:
        raise InvalidInput("this kiln has no registry to push builds to")
    ref = parse_reference(f"{repository}:{tag}")
    if ref is None or ref.host is not None:
        raise InvalidInput(
            f"{repository}:{tag} is not an image name kiln can push: lowercase repository"
            " (letters, digits, . _ - /), tag of letters, digits, . _ -"
        )
    source = labels.get(LABEL_SOURCE_HASH)
    known = await plane.store.images.get(repository, tag)
    if known is not None and source is not None:
        if known.labels.get(LABEL_SOURCE_HASH) == source:
            if await registry.manifest_digest(repository, known.digest) is not None:
                return _result(registry.host, known, cached=True, pushed=False)
        elif tag != MOVING_TAG:
            raise tag_conflict(known, f"a build of other source ({source})")
    image_id = await plane.driver.build_image(
        context, tag=f"{repository}:{tag}", labels=labels, dockerfile=dockerfile
    )
    plane.events.record(None, EventKind.IMAGE_BUILT, f"{who} built {repository}:{tag} ({image_id})")
    pinned = await pin_image(plane, f"{repository}:{tag}", key=None, who=who)
    entry = await plane.store.images.get(repository, tag)
    assert entry is not None  # pin_image recorded it
    return _result(registry.host, entry, cached=False, pushed=pinned.pushed)


def _result(host: str, entry: CatalogueEntry, *, cached: bool, pushed: bool) -> BuildResult:
    return BuildResult(
        reference=f"{host}/{entry.repository}@{entry.digest}",
        repository=entry.repository,
        tag=entry.tag,
        digest=entry.digest,
        image_id=entry.image_id,
        size=entry.size,
        labels=entry.labels,
        cached=cached,
        pushed=pushed,
    )


@dataclass(frozen=True)
class ImageView:
    repository: str
    tag: str
    digest: str
    reference: str
    size: int | None
    image_id: str
    provenance: dict[str, str]
    created_at: datetime
    created_by: str
    releases: list[str]  # "env/app#N" of every release pinned to this digest
    running: list[str]  # "env/app#N: K running" where instances of it run now


@dataclass(frozen=True)
class PruneResult:
    removed: list[ImageView]
    kept: list[ImageView]
    collected: str  # the garbage collector's summary ("" on a dry run)
    dry_run: bool


def _release_label(key: AppKey, number: int) -> str:
    return f"{key}#{number}"


async def _usage(plane: ControlPlane) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Pinned reference → the releases pinned to it, and → where instances of it run."""
    releases: dict[str, list[str]] = {}
    running: dict[str, list[str]] = {}
    instances = await plane.driver.list_instances()
    for app in await plane.store.list_apps():
        by_number = {r.number: r for r in await plane.store.list_releases(app.key)}
        for release in by_number.values():
            releases.setdefault(release.digest, []).append(_release_label(app.key, release.number))
        counts: dict[int, int] = {}
        for instance in instances:
            if instance.key == app.key and instance.running:
                counts[instance.release] = counts.get(instance.release, 0) + 1
        for number, count in sorted(counts.items()):
            if number in by_number:
                running.setdefault(by_number[number].digest, []).append(
                    f"{_release_label(app.key, number)}: {count} running"
                )
    return releases, running


async def list_images(plane: ControlPlane, repository: str | None) -> list[ImageView]:
    registry = plane.registry
    host = registry.host if registry is not None else ""
    releases, running = await _usage(plane)
    views = []
    for entry in await plane.store.images.list(repository):
        reference = f"{host}/{entry.repository}@{entry.digest}"
        views.append(
            ImageView(
                repository=entry.repository,
                tag=entry.tag,
                digest=entry.digest,
                reference=reference,
                size=entry.size,
                image_id=entry.image_id,
                provenance=entry.provenance(),
                created_at=entry.created_at,
                created_by=entry.created_by,
                releases=releases.get(reference, []),
                running=running.get(reference, []),
            )
        )
    return views


async def needed_references(plane: ControlPlane) -> set[str]:
    """What prune keeps: the last ``retain_releases`` releases of each app and environment,
    the releases kiln converges to, keeps stable, keeps warm (a rollback window) or holds,
    and every release with an instance on the engine."""
    keep = plane.settings.file.registry.retain_releases
    needed: set[str] = set()
    instances = await plane.driver.list_instances()
    for app in await plane.store.list_apps():
        history = await plane.store.list_releases(app.key)
        pinned = {
            app.target_release,
            app.stable_release,
            app.warm_release,
            app.held_release,
            *(i.release for i in instances if i.key == app.key),
        }
        for index, release in enumerate(history):
            if index >= len(history) - keep or release.number in pinned:
                needed.add(release.digest)
    return needed


async def prune_images(plane: ControlPlane, *, dry_run: bool, who: str) -> PruneResult:
    registry = plane.registry
    if registry is None:  # releases pin engine-local ids: nothing of kiln's to prune
        return PruneResult(removed=[], kept=[], collected="no registry", dry_run=dry_run)
    needed = await needed_references(plane)
    removed: list[ImageView] = []
    kept: list[ImageView] = []
    for view in await list_images(plane, None):
        (kept if view.reference in needed else removed).append(view)
    # A digest is deleted once, whichever of its tags listed it; a digest also kept under
    # another tag is never deleted.
    kept_digests = {(v.repository, v.digest) for v in kept}
    removed = [v for v in removed if (v.repository, v.digest) not in kept_digests]
    if dry_run:
        return PruneResult(removed=removed, kept=kept, collected="", dry_run=True)
    for repository, digest in sorted({(v.repository, v.digest) for v in removed}):
        await registry.delete_manifest(repository, digest)
        await plane.store.images.forget(repository, digest)
    collected = await registry.garbage_collect() if removed else "nothing removed"
    if removed:
        names = ", ".join(sorted({f"{v.repository}:{v.tag}" for v in removed}))
        plane.events.record(
            None,
            EventKind.IMAGE_PRUNED,
            f"{who} pruned {len(removed)} image tag(s) no release inside retention needs:"
            f" {names}; {collected}",
        )
    return PruneResult(removed=removed, kept=kept, collected=collected, dry_run=False)
