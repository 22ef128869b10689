"""``kiln deploy`` and ``kiln rollback``: make a release, then watch its rollout."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kiln.cli import context
from kiln.cli.commands import compose, images
from kiln.cli.exit_codes import ExitCode
from kiln.cli.secret_values import set_from_spec
from kiln.errors import InvalidInput, SpecInvalid

if TYPE_CHECKING:
    from kiln.client import DeployResult, KilnClient

WaitOption = Annotated[
    bool,
    typer.Option("--wait/--no-wait", help="Watch the rollout until it succeeds or rolls back."),
]
MessageOption = Annotated[
    str, typer.Option("--message", "-m", help="Why: kept on the release, shown by `kiln releases`.")
]


def deploy(
    file: Annotated[
        Path, typer.Option("--file", "-f", help="The app's kiln.yaml.", show_default=True)
    ] = Path("kiln.yaml"),
    message: MessageOption = "",
    wait: WaitOption = True,
    as_json: context.JsonOption = False,
    environment: Annotated[
        str | None,
        typer.Option(
            "--env",
            "-e",
            help="Deploy into this environment instead of the spec's `environment:`; the "
            "spec's `environments:` entry for it applies.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Deploy an app from its kiln.yaml: a new release, rolled out without downtime.

    Same image and spec as the running release: nothing changes (only the instance count).
    With --wait (the default) the rollout is shown live and the exit code says how it ended:
    0 live, 3 failed and rolled back. A Docker Compose file deploys every service as an app
    (in -e ENV, else $KILN_ENV, else dev), building each build: first; `kiln convert` shows
    what each becomes.

    Example:  kiln deploy -f kiln.yaml -m "new checkout page"     kiln deploy -e staging
    """
    text = read_spec_file(file)
    if compose.looks_like_compose(text, source=str(file)):
        compose.deploy_compose(
            file, text, message=message, wait=wait, as_json=as_json, environment=environment
        )
        return
    kiln = context.client()
    # `build: PATH` instead of `image:`: the source is built and pushed first, and the
    # release pins what was built.
    text = images.spec_with_build(kiln, text, spec_file=file) or text
    try:
        # The key is only known once the server parsed the spec; until then, events of every
        # app are skipped by starting after the newest one.
        after = kiln.last_event_id()
        # Secrets the spec reads from a file or a variable here become versions first.
        set_from_spec(kiln, text)
        result = kiln.deploy(text, message=message, environment=environment)
    except SpecInvalid as exc:
        raise SpecInvalid(exc.problems, source=str(file)) from None
    finish(kiln, result, after_event=after, wait=wait, as_json=as_json, verb="deploy")


def read_spec_file(file: Path) -> str:
    """The spec's text; ``InvalidInput`` (exit 2) for anything the server would refuse unread."""
    from kiln.spec import MAX_SPEC_BYTES

    try:
        with file.open("rb") as stream:
            # One byte past the limit is enough to know; a huge file is never read whole.
            data = stream.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise InvalidInput(f"{file} not found: give the app's spec with -f PATH") from None
    except IsADirectoryError:
        raise InvalidInput(f"{file} is a directory: give the spec file with -f PATH") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {file}: {exc.strerror or exc}") from exc
    if len(data) > MAX_SPEC_BYTES:
        raise InvalidInput(
            f"{file} is larger than {MAX_SPEC_BYTES // 1024} KiB, the most a spec may be"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InvalidInput(
            f"{file} is not UTF-8 text (line {line}, column {column}): save it as UTF-8"
        ) from None


def rollback(
    app: Annotated[str, typer.Argument(help="APP or ENV/APP.", show_default=False)],
    to: Annotated[
        int | None, typer.Option("--to", min=1, help="Release number [default: the previous].")
    ] = None,
    message: MessageOption = "",
    wait: WaitOption = True,
    as_json: context.JsonOption = False,
    env: context.EnvOption = None,
) -> None:
    """Roll an app back: a NEW release that reuses an earlier release's image and spec.

    History is never rewritten: rolling back from 5 to 3 makes release 6 ("rollback of 3").

    Example:  kiln rollback web --to 3 -m "5 breaks checkout"
    """
    key = context.resolve_app(app, env)
    kiln = context.client()
    after = kiln.last_event_id(key)
    result = kiln.rollback(key, to=to, message=message)
    finish(kiln, result, after_event=after, wait=wait, as_json=as_json, verb="rollback")


def finish(
    kiln: KilnClient,
    result: DeployResult,
    *,
    after_event: int,
    wait: bool,
    as_json: bool,
    verb: str,
) -> None:
    from kiln.cli.progress import watch_rollout
    from kiln.model import AppKey

    release = result.release
    key = AppKey(release.environment, release.app)
    out, err = context.out(), context.err()
    if not result.changed:
        if as_json:
            context.print_json({"result": result.model_dump(mode="json"), "outcome": "unchanged"})
        else:
            out.print(
                f"{key}: unchanged — release {release.number} already runs this image "
                "and spec (the instance count was applied)"
            )
        return
    if not wait:
        if as_json:
            context.print_json({"result": result.model_dump(mode="json"), "outcome": "started"})
        else:
            out.print(
                f"{key}: release {release.number} created; rollout started "
                f"(watch it with `kiln status {key}` or `kiln events {key} -f`)"
            )
        return
    if not as_json:
        rollout = result.rollout
        origin = f" ← from {rollout.from_release}" if rollout and rollout.from_release else ""
        out.print(f"{key}: {verb} release {release.number}{origin}")
    outcome = watch_rollout(
        kiln,
        key,
        release.number,
        after_event=after_event,
        console=None if as_json else out,
        live=out.is_terminal and not out.is_dumb_terminal,
    )
    if as_json:
        context.print_json(
            {
                "result": result.model_dump(mode="json"),
                "outcome": outcome.state,
                "reason": outcome.reason,
                "status": outcome.status.model_dump(mode="json") if outcome.status else None,
            }
        )
    elif outcome.state == "waiting":
        out.print(
            f"[yellow]…[/] {key}: release {release.number}: {outcome.reason}; go on with "
            f"`kiln promote {key.app}` (or `kiln abort {key.app}`), watch with "
            f"`kiln rollout status {key.app} -f`"
        )
    elif outcome.state == "succeeded":
        urls = " ".join(outcome.status.urls) if outcome.status else ""
        out.print(
            f"[green]✓[/] {key}: release {release.number} is live" + (f" at {urls}" if urls else "")
        )
    else:
        err.print(
            f"[red]✗[/] {key}: release {release.number} {outcome.state}: "
            f"{outcome.reason or 'no reason given'}"
        )
    if outcome.state == "gave_up":
        raise typer.Exit(ExitCode.UNEXPECTED)
    if outcome.state not in ("succeeded", "waiting"):
        raise typer.Exit(ExitCode.ROLLOUT_FAILED)
