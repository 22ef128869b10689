"""``kiln volume ls|inspect|rm|snapshot|restore``: an app's named volumes and their snapshots."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from kiln.cli import context
from kiln.errors import KilnError

if TYPE_CHECKING:
    from kiln.client.command_models import CopyProgress, VolumeSnapshot

HELP = (
    "Named volumes: data that outlives instances and releases, scoped to an app and environment;"
    " consistent snapshots under $KILN_HOME/snapshots, checked by sha256 before a restore."
)

AppArgument = Annotated[str, typer.Argument(help="APP or ENV/APP.", show_default=False)]
VolumeArgument = Annotated[str, typer.Argument(help="The volume, as the spec names it.")]


def ls(
    app: Annotated[str | None, typer.Argument(help="APP or ENV/APP [default: every app].")] = None,
    env: context.EnvOption = None,
    as_json: context.JsonOption = False,
) -> None:
    """List volumes: app, name, the releases that use it, when it was made.

    Example:  kiln volume ls web
    """
    key = context.resolve_app(app, env) if app else None
    volumes = context.client().list_volumes(key)
    if as_json:
        context.print_json([v.model_dump(mode="json") for v in volumes])
        return
    from kiln.cli.render import ago

    out = context.out()
    if not volumes:
        out.print("no volumes")
        return
    out.print(f"{'APP':<28} {'VOLUME':<20} {'USED BY':<12} CREATED")
    for v in volumes:
        used = ",".join(map(str, v.used_by)) or "-"
        out.print(
            f"{v.environment + '/' + v.app:<28} {v.name:<20} {used:<12} {ago(v.created_at)}",
            markup=False,
        )


def inspect(
    app: AppArgument,
    volume: VolumeArgument,
    env: context.EnvOption = None,
    as_json: context.JsonOption = False,
) -> None:
    """Show a volume: its engine name, the releases that use it, and its snapshots.

    Example:  kiln volume inspect web data
    """
    key = context.resolve_app(app, env)
    v = context.client().inspect_volume(key, volume)
    if as_json:
        context.print_json(v.model_dump(mode="json"))
        return
    from kiln.cli.render import ago

    out = context.out()
    out.print(f"{key} volume {v.name} (engine: {v.engine_name})", markup=False)
    out.print(f"used by release(s): {', '.join(map(str, v.used_by)) or 'none'}")
    if not v.snapshots:
        out.print(f"no snapshots (`kiln volume snapshot {key} {v.name}`)")
    for s in v.snapshots:
        out.print(
            f"  {s.id}  {s.size:>12} bytes  {s.consistency:<12} {ago(s.created_at)}"
            f"  sha256:{s.sha256[:16]}",
            markup=False,
        )


def rm(
    app: AppArgument,
    volume: VolumeArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    env: context.EnvOption = None,
) -> None:
    """Delete a volume and its data (refused while a release of the app uses it).

    Example:  kiln volume rm web old-cache --yes
    """
    key = context.resolve_app(app, env)
    if not yes and not typer.confirm(f"Delete volume {volume} of {key} and its data?"):
        context.err().print("nothing was changed")
        raise typer.Exit(2)
    context.client().remove_volume(key, volume)
    context.out().print(f"{key}: volume {volume} removed")


def snapshot(
    app: AppArgument,
    volume: VolumeArgument,
    env: context.EnvOption = None,
    as_json: context.JsonOption = False,
) -> None:
    """Copy a volume to $KILN_HOME/snapshots with its sha256.

    Consistent: the app must be stopped (`kiln stop APP`), or the volume has a pre_snapshot
    command that kiln runs in the instance first, or the release mounts it read_only (no
    instance can write it, so it is copied while the app runs).

    Example:  kiln stop web && kiln volume snapshot web data && kiln scale web 1
    """
    key = context.resolve_app(app, env)
    made = _follow(context.client().snapshot_volume(key, volume), "snapshot", quiet=as_json)
    _report(made, as_json, f"{key}: snapshot {made.id} of {volume}")


def restore(
    app: AppArgument,
    volume: VolumeArgument,
    snapshot_id: Annotated[str, typer.Argument(help="The snapshot's id (kiln volume inspect).")],
    env: context.EnvOption = None,
    as_json: context.JsonOption = False,
) -> None:
    """Replace a volume's files with a snapshot (its checksum is checked first). The app must
    be stopped; start it again with `kiln scale APP 1`.

    Example:  kiln volume restore web data 20261201T012345Z-3f2a
    """
    key = context.resolve_app(app, env)
    client = context.client()
    made = _follow(client.restore_volume(key, volume, snapshot_id), "restore", quiet=as_json)
    _report(made, as_json, f"{key}: volume {volume} restored from {made.id}")


def _follow(
    stream: Iterator[CopyProgress | VolumeSnapshot], what: str, *, quiet: bool
) -> VolumeSnapshot:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from kiln.client.command_models import CopyProgress

    started = time.monotonic()
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(f"{what}", *columns, console=context.err(), transient=True, disable=quiet) as bar:
        task = bar.add_task(what, total=None)
        for item in stream:
            if isinstance(item, CopyProgress):
                bar.update(task, completed=item.bytes, total=item.total)
            else:
                seconds = max(time.monotonic() - started, 1e-6)
                if not quiet:
                    context.err().print(
                        f"{item.size / 1e6:.1f} MB in {seconds:.1f} s"
                        f" ({item.size / 1e6 / seconds:.1f} MB/s)"
                    )
                return item
    raise KilnError(f"the {what} stream ended without an answer; see `kiln events`")


def _report(made: VolumeSnapshot, as_json: bool, line: str) -> None:
    if as_json:
        context.print_json(made.model_dump(mode="json"))
    else:
        context.out().print(
            f"{line} ({made.size} bytes, sha256 {made.sha256[:16]}…, {made.consistency})",
            markup=False,
        )
