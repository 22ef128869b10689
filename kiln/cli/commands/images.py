"""``kiln build`` and ``kiln images``: build a source directory into the registry, list and
prune kiln's images. Also what ``kiln deploy`` does with a spec that says ``build: PATH``.

The build context is tarred here, with fixed owners and times (the same files give the same
bytes), and uploaded: the server builds it on its engine and pushes it (the CLI never talks
to Docker). Provenance is what only this side can see: the git commit of PATH, whether the
tree is dirty, and a build time derived from the source (the commit's time for a clean tree,
else the newest file's time), never the clock: unchanged input gives the same labels, the same
image and the same digest — and the server answers the recorded digest without building.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import re
import subprocess
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

import kiln
from kiln.cli import context
from kiln.errors import InvalidInput

if TYPE_CHECKING:
    from rich.table import Table

    from kiln.client import KilnClient
    from kiln.client.command_models import BuiltImage, ImageEntry

MAX_CONTEXT_BYTES = 512 * 1024 * 1024
_ALWAYS_IGNORED = (".git", ".git/*")
_NAME = re.compile(r"[^a-z0-9._-]+")


def _ignored_patterns(root: Path) -> list[str]:
    try:
        lines = (root / ".dockerignore").read_text().splitlines()
    except OSError:
        lines = []
    patterns = [line.strip().strip("/") for line in lines]
    return [p for p in patterns if p and not p.startswith("#")] + list(_ALWAYS_IGNORED)


def _is_ignored(relative: str, patterns: list[str]) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(p, pattern) for p in prefixes for pattern in patterns)


def tar_context(root: Path) -> tuple[bytes, float]:
    """The context as an uncompressed tar with fixed owners and times, and the newest mtime."""
    patterns = _ignored_patterns(root)
    buffer = io.BytesIO()
    newest = 0.0
    size = 0
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if _is_ignored(relative, patterns):
                continue
            info = tar.gettarinfo(str(path), arcname=relative)
            if info is None:  # a socket or device: nothing a build can use
                continue
            newest = max(newest, info.mtime)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isfile():
                size += info.size
                if size > MAX_CONTEXT_BYTES:
                    raise InvalidInput(
                        f"the build context {root} is larger than {MAX_CONTEXT_BYTES >> 20} MiB:"
                        " list what the build does not need in .dockerignore"
                    )
                with path.open("rb") as stream:
                    tar.addfile(info, stream)
            else:
                tar.addfile(info)
    return buffer.getvalue(), newest


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def provenance(root: Path, context_tar: bytes, newest: float, dockerfile: str) -> dict[str, str]:
    from kiln.model.image import (
        LABEL_BUILDER,
        LABEL_CREATED,
        LABEL_SOURCE_COMMIT,
        LABEL_SOURCE_DIRTY,
        LABEL_SOURCE_HASH,
    )

    commit = _git(root, "rev-parse", "HEAD")
    dirty = commit is None or bool(_git(root, "status", "--porcelain", "--", "."))
    source = hashlib.sha256(context_tar + b"\0" + dockerfile.encode()).hexdigest()
    if commit and not dirty:
        created = _git(root, "log", "-1", "--format=%cI", "HEAD") or ""
    else:
        created = datetime.fromtimestamp(int(newest), UTC).isoformat()
    return {
        LABEL_SOURCE_COMMIT: commit or "none",
        LABEL_SOURCE_DIRTY: "true" if dirty else "false",
        LABEL_SOURCE_HASH: f"sha256:{source}",
        LABEL_CREATED: created,
        LABEL_BUILDER: f"kiln {kiln.__version__} ({context.actor()})",
    }


def _name_and_tag(tag: str | None, root: Path, labels: dict[str, str]) -> tuple[str, str]:
    if tag:
        repository, colon, version = tag.rpartition(":")
        if not colon or "/" in version:
            repository, version = tag, ""
    else:
        repository, version = _NAME.sub("-", root.resolve().name.lower()).strip("-._"), ""
    if not version:
        from kiln.model.image import LABEL_SOURCE_COMMIT, LABEL_SOURCE_DIRTY, LABEL_SOURCE_HASH

        commit = labels[LABEL_SOURCE_COMMIT]
        clean = labels[LABEL_SOURCE_DIRTY] == "false"
        source = labels[LABEL_SOURCE_HASH].removeprefix("sha256:")
        version = f"git-{commit[:12]}" if clean else f"src-{source[:12]}"
    if not repository:
        raise InvalidInput("name the image: kiln build PATH -t APP[:TAG]")
    return repository, version


def build_source(
    kiln_client: KilnClient, root: Path, *, tag: str | None, dockerfile: str = "Dockerfile"
) -> BuiltImage:
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a directory: kiln build PATH (a directory)")
    if not (root / dockerfile).is_file():
        raise InvalidInput(f"{root / dockerfile} not found: the build needs a Dockerfile")
    context_tar, newest = tar_context(root)
    labels = provenance(root, context_tar, newest, dockerfile)
    repository, version = _name_and_tag(tag, root, labels)
    return kiln_client.build_image(
        context_tar, repository=repository, tag=version, labels=labels, dockerfile=dockerfile
    )


def build(
    path: Annotated[
        Path, typer.Argument(help="The source directory (with its Dockerfile).")
    ] = Path("."),
    tag: Annotated[
        str | None,
        typer.Option(
            "--tag",
            "-t",
            help="APP[:TAG] [default: the directory's name; git-<commit> for a clean tree, "
            "src-<source hash> otherwise].",
            show_default=False,
        ),
    ] = None,
    dockerfile: Annotated[
        str, typer.Option("--file", "-f", help="The Dockerfile, inside PATH.")
    ] = "Dockerfile",
    as_json: context.JsonOption = False,
) -> None:
    """Build PATH into kiln's registry; print the image's registry digest.

    The image is labelled with its provenance (git commit, dirty tree or not, build time,
    builder). A tag means one image forever: a different build under a used tag is refused.
    Nothing changed since the last build: the same digest, at once. The digest is what
    `image:` in a kiln.yaml takes (or write `build: PATH` and `kiln deploy` builds first).

    Example:  kiln deploy -f <(sed "s|^image:.*|image: $(kiln build . -t web:1.4)|" kiln.yaml)
    """
    kiln_client = context.client(timeout=60)
    result = build_source(kiln_client, path, tag=tag, dockerfile=dockerfile)
    if as_json:
        context.print_json(result.model_dump(mode="json"))
        return
    how = "unchanged source: the recorded image" if result.cached else "built and pushed"
    context.err().print(f"{result.repository}:{result.tag} — {how}", markup=False)
    context.out().print(result.reference, markup=False)


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value = value / 1024  # type: ignore[assignment]
    return "-"


def _table(entries: list[ImageEntry]) -> Table:
    from rich.table import Table

    from kiln.model.image import LABEL_CREATED, LABEL_SOURCE_COMMIT, LABEL_SOURCE_DIRTY

    table = Table(box=None, pad_edge=False)
    for column in ("IMAGE", "DIGEST", "SIZE", "COMMIT", "CREATED", "RELEASES", "RUNNING"):
        table.add_column(column, no_wrap=column in ("IMAGE", "DIGEST"))
    for e in entries:
        commit = e.provenance.get(LABEL_SOURCE_COMMIT, "-")
        if e.provenance.get(LABEL_SOURCE_DIRTY) == "true":
            commit = f"{commit[:12]}+dirty"
        table.add_row(
            f"{e.repository}:{e.tag}",
            e.digest[:19],
            _size(e.size),
            commit[:18],
            e.provenance.get(LABEL_CREATED, f"{e.created_at:%Y-%m-%d %H:%M}")[:19],
            ", ".join(e.releases) or "-",
            ", ".join(e.running) or "-",
        )
    return table


def images(
    app: Annotated[
        str | None,
        typer.Argument(
            help="APP: only this repository; `prune` removes what no release needs.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="prune: say what would be removed, remove nothing.")
    ] = False,
    as_json: context.JsonOption = False,
) -> None:
    """kiln's images: tags, digests, sizes, provenance, the releases using them, where they run.

    `kiln images prune` removes every image that no release inside retention needs (the last
    10 releases of each app and environment — registry.retain_releases in the settings file —
    plus the stable, warm and held releases and anything running), then runs the registry's
    garbage collection (it serves pulls read-only meanwhile).

    Examples:  kiln images web      kiln images prune --dry-run
    """
    kiln_client = context.client(timeout=600)
    if app == "prune":
        report = kiln_client.prune_images(dry_run=dry_run)
        if as_json:
            context.print_json(report.model_dump(mode="json"))
            return
        out = context.out()
        verb = "would remove" if report.dry_run else "removed"
        out.print(f"{verb} {len(report.removed)} image tag(s), kept {len(report.kept)}")
        for entry in report.removed:
            out.print(f"  - {entry.repository}:{entry.tag} {entry.digest}", markup=False)
        if report.collected:
            out.print(f"garbage collection: {report.collected}", markup=False)
        return
    if dry_run:
        raise InvalidInput("--dry-run goes with `kiln images prune`")
    entries = kiln_client.images(app)
    if as_json:
        context.print_json([e.model_dump(mode="json") for e in entries])
        return
    if not entries:
        context.out().print("no images yet: `kiln build PATH -t APP:TAG` or `kiln deploy`")
        return
    context.out().print(_table(entries))


def spec_with_build(kiln_client: KilnClient, text: str, *, spec_file: Path) -> str | None:
    """A spec that says ``build: PATH`` or ``build: {context: PATH, dockerfile: FILE}`` (PATH
    relative to the spec's directory, FILE inside PATH): build it, and the spec text with
    ``image:`` set to the built digest. An ``image:`` given with it names the build (as Compose
    tags a build with ``image:``); without one the build is named after the app. None when the
    spec has no ``build``."""
    from kiln.spec.safe_yaml import load_yaml

    try:
        data: Any = load_yaml(text)
    except Exception:
        return None  # the server names the problem, with the rest of the spec's
    if not isinstance(data, dict) or "build" not in data:
        return None
    source = data.pop("build")
    dockerfile: object = "Dockerfile"
    if isinstance(source, dict):
        unknown = sorted(str(k) for k in source if k not in ("context", "dockerfile"))
        if unknown:
            raise InvalidInput(
                f"{spec_file}: build: takes context and dockerfile, not {', '.join(unknown)}"
            )
        dockerfile = source.get("dockerfile", "Dockerfile")
        source = source.get("context", ".")
    if not isinstance(source, str) or not source:
        raise InvalidInput(f"{spec_file}: build: must be a directory path (with a Dockerfile)")
    if not isinstance(dockerfile, str) or not dockerfile:
        raise InvalidInput(f"{spec_file}: build.dockerfile: must be a file inside the context")
    root = (spec_file.parent / source).resolve()
    image, app = data.get("image"), data.get("app")
    tag = image if isinstance(image, str) else app if isinstance(app, str) else None
    result = build_source(kiln_client, root, tag=tag, dockerfile=dockerfile)
    context.err().print(
        f"build: {result.repository}:{result.tag} → {result.reference}"
        + (" (unchanged source)" if result.cached else ""),
        markup=False,
    )
    data["image"] = result.reference
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
