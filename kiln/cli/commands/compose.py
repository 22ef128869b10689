"""``kiln convert compose.yaml`` and ``kiln deploy -f compose.yaml``: Compose files as kiln apps.

The conversion is ``kiln.spec.compose`` (pure); this module does its I/O: the project's ``.env``
and the shell's environment for ``${VAR}``, ``env_file:`` paths and build contexts relative to
the Compose file, and the builds ``kiln deploy`` runs before it deploys.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kiln.cli import context
from kiln.errors import InvalidInput, SpecInvalid

if TYPE_CHECKING:
    from kiln.spec.compose import Conversion

_MAX_ENV_FILE_BYTES = 1024 * 1024


def looks_like_compose(text: str, *, source: str) -> bool:
    """True for a Compose file (``services:`` at the top), False for a kiln.yaml or bad YAML
    (which the server then refuses with its usual problems)."""
    from kiln.spec.compose import is_compose, load_document

    try:
        return is_compose(load_document(text, source=source))
    except SpecInvalid:
        return False


def load_compose(file: Path, text: str, environment: str) -> Conversion:
    """Convert ``text`` (read from ``file``); warnings go to stderr, problems raise."""
    from kiln.spec.compose import convert_compose

    folder = file.parent
    variables = {**_dot_env(folder), **os.environ}
    conversion = convert_compose(
        text,
        variables=variables,
        read_env_file=_env_file_reader(folder),
        environment=environment,
        source=str(file),
    )
    err = context.err()
    for warning in conversion.warnings:
        err.print(f"warning: {warning}", markup=False)
    return conversion


def _read_small(path: Path) -> str | None:
    try:
        with path.open("rb") as stream:
            data = stream.read(_MAX_ENV_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > _MAX_ENV_FILE_BYTES:
        raise InvalidInput(f"{path} is larger than 1 MiB: an environment file is not that big")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text: save it as UTF-8") from None


def _dot_env(folder: Path) -> dict[str, str]:
    # Compose reads the project's .env for interpolation; the shell's variables win over it.
    text = _read_small(folder / ".env")
    if text is None:
        return {}
    from kiln.spec.envfile import EnvFileError, parse_env_file

    try:
        return parse_env_file(text, dict(os.environ))
    except EnvFileError as exc:
        raise InvalidInput(f"{folder / '.env'}: {exc}") from None


def _env_file_reader(folder: Path) -> Callable[[str], str | None]:
    def read(path: str) -> str | None:
        return _read_small(folder / path)

    return read


def convert(
    file: Annotated[Path, typer.Argument(help="The Compose file.", show_default=True)] = Path(
        "compose.yaml"
    ),
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            "-e",
            envvar="KILN_ENV",
            help="Environment of the apps [default: $KILN_ENV or dev].",
            show_default=False,
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write DIR/<service>.kiln.yaml, one file per service.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print the kiln.yaml of every service in a Docker Compose file (works without a server).

    Each service becomes an app: image or build (context, dockerfile; kiln deploy builds
    it), command, environment and env_file, ports (the container port, routed through
    NGINX), healthcheck, deploy (replicas, update_config, resources), named volumes,
    read_only, cap_add, tmpfs, user, stop_grace_period. Labels kiln.route.host,
    kiln.route.path (comma-separated) set the routes, kiln.port picks the port when there
    are several. What kiln leaves out is a warning on stderr; what it cannot run (bind
    mounts, build args, entrypoint, network_mode: service:…) is an error (exit 2) naming
    each key and why. Build contexts stay relative to the Compose file (with -o: to DIR).

    Examples:  kiln convert compose.yaml          kiln convert compose.yaml -o kiln/
    """
    from kiln.cli.commands.deploy import read_spec_file
    from kiln.spec.compose import render_spec

    text = read_spec_file(file)
    conversion = load_compose(file, text, env or context.DEFAULT_ENV)
    documents = []
    for spec in conversion.specs:
        build = conversion.builds.get(spec.app)
        if build is not None and out_dir is not None:
            # The kiln.yaml's build: is relative to its own folder.
            where = os.path.relpath((file.parent / build.context).resolve(), out_dir.resolve())
            build = dataclasses.replace(build, context=Path(where).as_posix())
        comment = f"service {spec.app} of {file.name}"
        documents.append(render_spec(spec, comment=comment, build=build))
    if out_dir is None:
        context.out().print("---\n".join(documents), end="", markup=False)
        return
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for spec, document in zip(conversion.specs, documents, strict=True):
            target = out_dir / f"{spec.app}.kiln.yaml"
            target.write_text(document, encoding="utf-8")
            context.err().print(f"wrote {target}", markup=False)
    except OSError as exc:
        raise InvalidInput(f"cannot write into {out_dir}: {exc.strerror or exc}") from exc


def deploy_compose(
    file: Path,
    text: str,
    *,
    message: str,
    wait: bool,
    as_json: bool,
    environment: str | None = None,
) -> None:
    """``kiln deploy -f compose.yaml [-e ENV]``: every ``build:`` first (as Compose builds
    before it starts anything), then one release per service, in file order, each watched
    (with --wait) before the next; the exit code is the worst of them."""
    from kiln.cli.commands.deploy import finish
    from kiln.cli.commands.images import spec_with_build
    from kiln.spec.compose import render_spec

    environment = environment or os.environ.get("KILN_ENV") or context.DEFAULT_ENV
    conversion = load_compose(file, text, environment)
    kiln = context.client()
    documents = []
    for spec in conversion.specs:
        build = conversion.builds.get(spec.app)
        document = render_spec(spec, comment=f"service {spec.app} of {file.name}", build=build)
        if build is not None:
            document = spec_with_build(kiln, document, spec_file=file) or document
        documents.append((spec.app, document))
    worst = 0
    for app, document in documents:
        after = kiln.last_event_id()
        try:
            result = kiln.deploy(document, message=message)
        except SpecInvalid as exc:
            raise SpecInvalid(exc.problems, source=f"{file} (service {app})") from None
        try:
            finish(kiln, result, after_event=after, wait=wait, as_json=as_json, verb="deploy")
        except typer.Exit as exc:
            worst = max(worst, exc.exit_code)
    if worst:
        raise typer.Exit(worst)
