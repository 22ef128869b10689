"""Secret commands: set, list, remove, rotate the master key; and the versions a release pins.

Setting a value touches no running instance: it is a new version, and a release pins versions
(``resolve_versions`` at deploy); ``commands.redeploy_secret`` makes the release that brings
it — the target release again, with the new version — so a bad secret rolls back like a bad
image. Events and answers name secrets and versions, never values.
"""

from __future__ import annotations

from kiln.controller.runtime import ControlPlane
from kiln.controller.views import KeyRotation, SecretSetResult, SecretView
from kiln.errors import Conflict, InvalidInput
from kiln.model import AppKey, EventKind, Release
from kiln.spec import AppSpec


async def resolve_versions(plane: ControlPlane, key: AppKey, spec: AppSpec) -> dict[str, int]:
    """The version of each secret ``spec`` names: its pin, else the newest. Every secret that
    is missing is named in one error, with the command that sets it."""
    if not spec.secrets:
        return {}
    newest = await plane.store.run(plane.vault.newest, key)
    versions: dict[str, int] = {}
    problems: list[str] = []
    for use in spec.secrets:
        have = newest.get(use.name)
        if have is None:
            problems.append(
                f"secrets: {use.name} is not set for {key}: `kiln secret set {key} {use.name}`"
                " (the value on stdin) first"
            )
        elif use.version is not None and use.version > have:
            problems.append(
                f"secrets: {use.name} version {use.version} does not exist for {key}"
                f" (the newest is {have})"
            )
        else:
            versions[use.name] = use.version or have
    if problems:
        raise InvalidInput("; ".join(problems))
    return versions


async def set_secret(
    plane: ControlPlane, key: AppKey, name: str, value: bytes, *, who: str
) -> SecretSetResult:
    made, changed = await plane.store.run(
        plane.vault.set, key, name, value, who=who, now=plane.clock()
    )
    if changed:
        plane.events.record(
            key, EventKind.SECRET_SET, f"{who} set secret {name} of {key}: version {made.version}"
        )
    return SecretSetResult(name=name, version=made.version, changed=changed)


async def list_secrets(plane: ControlPlane, key: AppKey) -> list[SecretView]:
    app = await plane.store.get_app(key)
    target: Release | None = None
    if app is not None and app.target_release is not None:
        target = await plane.release_or_none(key, app.target_release)
    pinned = target.secret_versions if target else {}
    by_name: dict[str, list[int]] = {}
    views: dict[str, SecretView] = {}
    for v in await plane.store.run(plane.vault.versions, key):
        by_name.setdefault(v.name, []).append(v.version)
        views[v.name] = SecretView(
            name=v.name,
            version=v.version,
            versions=len(by_name[v.name]),
            created_at=v.created_at,
            created_by=v.created_by,
            in_use=pinned.get(v.name),
        )
    return [views[name] for name in sorted(views)]


async def remove_secret(plane: ControlPlane, key: AppKey, name: str, *, who: str) -> None:
    app = await plane.store.get_app(key)
    serving = []
    if app is not None:
        for number in {app.target_release, app.stable_release, app.warm_release} - {None}:
            assert number is not None
            release = await plane.release_or_none(key, number)
            if release is not None and name in release.secret_versions:
                serving.append(number)
    if serving:
        raise Conflict(
            f"secret {name} is used by release {', '.join(map(str, sorted(serving)))} of {key}:"
            " deploy a spec without it first, then remove it"
        )
    count = await plane.store.run(plane.vault.remove, key, name)
    plane.events.record(
        key, EventKind.SECRET_REMOVED, f"{who} removed secret {name} of {key} ({count} version(s))"
    )


async def rotate_master_key(plane: ControlPlane, *, who: str) -> KeyRotation:
    rotation = await plane.store.run(plane.vault.rotate)
    plane.events.record(
        None,
        EventKind.SECRET_KEY_ROTATED,
        f"{who} rotated the master key: {rotation.reencrypted} secret version(s) re-encrypted"
        f" under key {rotation.key_id}"
        + (f"; key(s) {', '.join(rotation.retired)} retired" if rotation.retired else ""),
    )
    return KeyRotation(
        key_id=rotation.key_id,
        reencrypted=rotation.reencrypted,
        retired=list(rotation.retired),
        unused_env_keys=list(rotation.kept_in_env),
    )
