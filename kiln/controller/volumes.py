"""Volume commands: list, inspect, remove, snapshot, restore.

```
snapshot(APP, VOLUME) ── an instance runs? ── no ─────────────────────────▶ copy (consistent: stopped)
                               │ yes: read_only in the release? ── yes ──────▶ copy (no writer)
                               │ no: the volume has pre_snapshot? ── no ─▶ Conflict: stop it first
                               ▼ yes: run it in each running instance (exit 0) ─▶ copy
copy: a helper container (created, never started) mounts the volume; its files come out as a
      tar to $KILN_HOME/snapshots/ENV/APP/VOLUME/ID.tar, fsynced, with ID.json {sha256, size}
restore(APP, VOLUME, ID) ── no instance of the app runs (else Conflict) ── the tar's sha256 is
      the recorded one (else refused: corrupted) ── the volume is made anew from the tar
```
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from kiln.controller.runtime import ControlPlane
from kiln.errors import Conflict, InvalidInput, NotFound, PermanentFailure
from kiln.model import AppKey, EventKind, Release, Snapshot, VolumeInfo

SNAPSHOT_ID_LENGTH = 40
_CHUNK = 1024 * 1024


def snapshot_dir(plane: ControlPlane, key: AppKey, volume: str) -> Path:
    return plane.settings.home / "snapshots" / key.environment / key.app / volume


async def _releases_in_play(plane: ControlPlane, key: AppKey) -> list[Release]:
    app = await plane.store.get_app(key)
    if app is None:
        return []
    numbers = {app.target_release, app.stable_release, app.warm_release, app.held_release}
    found = [await plane.release_or_none(key, n) for n in numbers if n is not None]
    return [r for r in found if r is not None]


async def used_by(plane: ControlPlane, key: AppKey, volume: str) -> list[int]:
    """The releases the app may run (target, stable, warm, held) that mount ``volume``."""
    return sorted(
        r.number
        for r in await _releases_in_play(plane, key)
        if any(v.name == volume for v in r.spec.volumes)
    )


async def list_volumes(plane: ControlPlane, key: AppKey | None) -> list[VolumeInfo]:
    return await plane.driver.list_volumes(key)


async def require_volume(plane: ControlPlane, key: AppKey, volume: str) -> VolumeInfo:
    for info in await plane.driver.list_volumes(key):
        if info.name == volume:
            return info
    raise NotFound(f"{key} has no volume {volume}; `kiln volume ls {key}` lists them")


async def remove_volume(plane: ControlPlane, key: AppKey, volume: str, *, who: str) -> None:
    users = await used_by(plane, key, volume)
    if users:
        raise Conflict(
            f"volume {volume} of {key} is used by release {', '.join(map(str, users))}:"
            " deploy a spec without it (or `kiln destroy` the app) first; its data stays until then"
        )
    await require_volume(plane, key, volume)
    await plane.driver.remove_volume(key, volume)
    plane.events.record(key, EventKind.VOLUME_REMOVED, f"{who} removed volume {volume} of {key}")


def list_snapshots(plane: ControlPlane, key: AppKey, volume: str) -> list[Snapshot]:
    directory = snapshot_dir(plane, key, volume)
    found = []
    for manifest in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        with contextlib.suppress(ValueError, KeyError, OSError):
            found.append(_read_manifest(key, volume, manifest))
    return found


async def snapshot(
    plane: ControlPlane, key: AppKey, volume: str, *, who: str, progress: Callable[[int], None]
) -> Snapshot:
    await require_volume(plane, key, volume)
    image, consistency = await _quiesce(plane, key, volume)
    now = plane.clock()
    ident = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"
    directory = snapshot_dir(plane, key, volume)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = directory / f".{ident}.tar.partial"
    try:
        size, digest = await plane.driver.export_volume(
            key, volume, image=image, into=partial, progress=progress
        )
        partial.rename(directory / f"{ident}.tar")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    made = Snapshot(
        key=key,
        volume=volume,
        id=ident,
        created_at=now,
        size=size,
        sha256=digest,
        consistency=consistency,
    )
    _write_manifest(directory / f"{ident}.json", made)
    plane.events.record(
        key,
        EventKind.VOLUME_SNAPSHOT,
        f"{who} took snapshot {ident} of volume {volume} ({size} bytes, {consistency})",
    )
    return made


async def restore(
    plane: ControlPlane,
    key: AppKey,
    volume: str,
    ident: str,
    *,
    who: str,
    progress: Callable[[int], None],
) -> Snapshot:
    await require_volume(plane, key, volume)
    made = _find(plane, key, volume, ident)
    running = [i for i in await plane.driver.list_instances(key) if i.running]
    if running:
        raise Conflict(
            f"{key} is running ({len(running)} instance(s)): `kiln stop {key}` first, restore,"
            f" then `kiln scale {key} 1`; a restore never changes a volume under a running app"
        )
    tar = snapshot_dir(plane, key, volume) / f"{ident}.tar"
    digest, size = await asyncio.to_thread(_sha256, tar)
    if digest != made.sha256 or size != made.size:
        raise InvalidInput(
            f"snapshot {ident} of volume {volume} is corrupted: its sha256 is {digest[:16]}…"
            f" ({size} bytes), the recorded one {made.sha256[:16]}… ({made.size} bytes);"
            " nothing was changed. Restore another snapshot (`kiln volume inspect` lists them)"
        )
    image = await _image_for(plane, key, volume)
    await plane.driver.import_volume(key, volume, image=image, source=tar, progress=progress)
    plane.events.record(
        key,
        EventKind.VOLUME_RESTORED,
        f"{who} restored volume {volume} of {key} from snapshot {ident}",
    )
    return made


async def _quiesce(plane: ControlPlane, key: AppKey, volume: str) -> tuple[str, str]:
    """The image for the copy, and how the copy is consistent."""
    image = await _image_for(plane, key, volume)
    running = [i for i in await plane.driver.list_instances(key) if i.running]
    if not running:
        return image, "stopped"
    app = await plane.store.get_app(key)
    target = (
        await plane.release_or_none(key, app.target_release) if app and app.target_release else None
    )
    spec_volume = (
        next((v for v in target.spec.volumes if v.name == volume), None) if target else None
    )
    if spec_volume is not None and spec_volume.read_only:
        return image, "read_only"  # its instances cannot write it: no write can be half-done
    if spec_volume is None or not spec_volume.pre_snapshot:
        raise Conflict(
            f"{key} is running: a copy of volume {volume} now could catch a write half-done."
            f" `kiln stop {key}` first (then `kiln scale {key} 1`), or give the volume a"
            " pre_snapshot command that makes its files consistent"
        )
    for instance in running:
        code = await plane.driver.exec(
            instance.container_id, list(spec_volume.pre_snapshot), timeout=60
        )
        if code != 0:
            raise Conflict(
                f"pre_snapshot of volume {volume} exited with {code} in {instance.id}:"
                " no snapshot taken"
            )
    return image, "pre_snapshot"


async def _image_for(plane: ControlPlane, key: AppKey, volume: str) -> str:
    """An image the engine has, for the helper container: the app's own release image."""
    for release in await _releases_in_play(plane, key):
        return release.digest
    raise Conflict(f"{key} has no release on record to copy volume {volume} with; deploy it first")


def _find(plane: ControlPlane, key: AppKey, volume: str, ident: str) -> Snapshot:
    if not ident or len(ident) > SNAPSHOT_ID_LENGTH or not ident.replace("-", "").isalnum():
        raise InvalidInput(f"a snapshot id is like 20261201T012345Z-3f2a, got {ident[:40]!r}")
    manifest = snapshot_dir(plane, key, volume) / f"{ident}.json"
    if not manifest.exists():
        raise NotFound(
            f"volume {volume} of {key} has no snapshot {ident}; `kiln volume inspect {key}"
            f" {volume}` lists them"
        )
    try:
        return _read_manifest(key, volume, manifest)
    except (ValueError, KeyError, OSError) as exc:
        raise PermanentFailure(f"the record of snapshot {ident} is damaged: {exc}") from exc


def _write_manifest(path: Path, made: Snapshot) -> None:
    body = json.dumps(
        {
            "id": made.id,
            "volume": made.volume,
            "created_at": made.created_at.isoformat(),
            "size": made.size,
            "sha256": made.sha256,
            "consistency": made.consistency,
        }
    )
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_manifest(key: AppKey, volume: str, path: Path) -> Snapshot:
    data = json.loads(path.read_text())
    return Snapshot(
        key=key,
        volume=volume,
        id=str(data["id"]),
        created_at=datetime.fromisoformat(data["created_at"]),
        size=int(data["size"]),
        sha256=str(data["sha256"]),
        consistency=str(data["consistency"]),
    )


def _sha256(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
