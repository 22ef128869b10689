"""Read commands: ``status``, ``ps``, ``releases``, ``events``, ``logs``, ``schema``, ``version``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

import kiln
from kiln.cli import context
from kiln.errors import InvalidInput, KilnError

if TYPE_CHECKING:
    from kiln.client import Event, Identity

OptionalApp = Annotated[
    str | None, typer.Argument(help="APP or ENV/APP; omit for every app.", show_default=False)
]
AppArgument = Annotated[str, typer.Argument(help="APP or ENV/APP.", show_default=False)]
FollowOption = Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new ones.")]


def status(
    app: OptionalApp = None, as_json: context.JsonOption = False, env: context.EnvOption = None
) -> None:
    """Show every app (state, release, ready/scale, URLs), or one app in detail.

    With --json: {"installation_id": ..., "apps": [...]}, or one app's object (with
    "installation_id") when APP is given.

    Examples:  kiln status          kiln status web          kiln status staging/web --json
    """
    kiln = context.client()
    if app is None:
        apps = kiln.list_apps()
        if as_json:
            context.print_json(
                {
                    "installation_id": kiln.server_identity().installation_id,
                    "apps": [a.model_dump(mode="json") for a in apps],
                }
            )
        elif apps:
            from kiln.cli.render import apps_table

            context.out().print(apps_table(apps))
        else:
            context.out().print("no apps yet — deploy one with `kiln deploy -f kiln.yaml`")
        return
    one = kiln.status(context.resolve_app(app, env))
    if as_json:
        installation = kiln.server_identity().installation_id
        context.print_json({**one.model_dump(mode="json"), "installation_id": installation})
    else:
        from kiln.cli.render import STEERED_STRATEGIES, app_details

        # A canary or blue-green rollout in progress: its step and weights, as the server says.
        r = one.rollout
        steered = r is not None and not r.finished and r.strategy in STEERED_STRATEGIES
        step = kiln.rollout_status(one.key).status if steered else None
        context.out().print(app_details(one, rollout_status=step))


def ps(
    app: OptionalApp = None, as_json: context.JsonOption = False, env: context.EnvOption = None
) -> None:
    """List instances (containers) with their release, health and router membership.

    Examples:  kiln ps          kiln ps web --json
    """
    kiln = context.client()
    apps = kiln.list_apps() if app is None else [kiln.status(context.resolve_app(app, env))]
    rows = [(str(a.key), i) for a in apps for i in a.instances]
    if as_json:
        context.print_json([{"app": key, **i.model_dump(mode="json")} for key, i in rows])
    elif rows:
        from kiln.cli.render import instances_table

        context.out().print(instances_table(rows, with_app=True))
    else:
        context.out().print("no instances")


def releases(
    app: AppArgument, as_json: context.JsonOption = False, env: context.EnvOption = None
) -> None:
    """List an app's releases, oldest first: who, when, image digest, spec hash, outcome.

    Example:  kiln releases web
    """
    found = context.client().releases(context.resolve_app(app, env))
    if as_json:
        context.print_json([r.model_dump(mode="json") for r in found])
    else:
        from kiln.cli.render import releases_table

        context.out().print(releases_table(found))


def events(
    app: OptionalApp = None,
    follow: FollowOption = False,
    as_json: context.JsonOption = False,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=1000, help="How many recent events.")
    ] = 20,
    app_option: Annotated[
        str | None,
        typer.Option("--app", "-a", help="Only this app (APP or ENV/APP); same as the argument."),
    ] = None,
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--type",
            "-t",
            help="Only these: a category (rollout, instance, router, drift, auth, ...) or a "
            "kind (rollout.failed). Repeat it or separate with commas.",
        ),
    ] = None,
    env: context.EnvOption = None,
) -> None:
    """Show recent events (every state change, with its reason); -f follows new ones.

    With --json and -f, one JSON object per line.

    Examples:  kiln events          kiln events web -f          kiln events --type rollout.failed
    """
    if app and app_option and app != app_option:
        raise InvalidInput(f"two apps given ({app!r} and --app {app_option!r}): give one")
    app = app or app_option
    key = context.resolve_app(app, env) if app else None
    wanted = [part.strip() for value in types or () for part in value.split(",") if part.strip()]
    kiln = context.client()
    recent = kiln.events(key=key, after=0, limit=limit, types=wanted)
    if as_json and not follow:
        context.print_json([e.model_dump(mode="json") for e in recent])
        return
    for event in recent:
        _print_event(event, as_json)
    if not follow:
        return
    after = max(recent[-1].id if recent else 0, kiln.last_event_id(key))
    try:
        for event in kiln.follow_events(key=key, after=after, types=wanted):
            _print_event(event, as_json)
    except KeyboardInterrupt:
        return


def _print_event(event: Event, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(event.model_dump_json() + "\n")
        sys.stdout.flush()
    else:
        from kiln.cli.render import event_text

        context.out().print(event_text(event))


def logs(
    app: AppArgument,
    follow: FollowOption = False,
    instance: Annotated[
        str | None, typer.Option("--instance", "-i", help="Only this instance (see `kiln ps`).")
    ] = None,
    tail: Annotated[int, typer.Option("--tail", "-n", min=0, help="Lines of history.")] = 100,
    release: Annotated[
        int | None, typer.Option("--release", "-r", min=1, help="Only this release's instances.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only lines of the last 10m, 90s, 2h, ...")
    ] = None,
    grep: Annotated[
        str | None, typer.Option("--grep", "-g", help="Only lines containing this text.")
    ] = None,
    router: Annotated[
        bool, typer.Option("--router", help="NGINX's access log lines of the app instead.")
    ] = False,
    as_json: context.JsonOption = False,
    env: context.EnvOption = None,
) -> None:
    """Print an app's logs: every instance's output, merged in time order, each line prefixed
    with its instance. Instances that crashed or were replaced are kept too (bounded by the
    settings file's logs section); -f keeps following, and a rollout's new instances join.

    Examples:  kiln logs web          kiln logs web -f          kiln logs web --release 3
               kiln logs web --since 10m --grep ERROR          kiln logs web --router -f
    """
    key = context.resolve_app(app, env)
    lines = context.client().logs(
        key,
        instance=instance,
        follow=follow,
        tail=tail,
        release=release,
        since=since,
        grep=grep,
        router=router,
    )
    try:
        for line in lines:
            if as_json:
                sys.stdout.write(line.model_dump_json() + "\n")
                sys.stdout.flush()
                continue
            stream = sys.stderr if line.stream == "stderr" else sys.stdout
            stream.write(f"{line.instance} | {line.text.rstrip(chr(10))}\n")
            stream.flush()
    except KeyboardInterrupt:
        return


def schema() -> None:
    """Print the JSON Schema of kiln.yaml (for editors; works without a running server).

    Example:  kiln schema > kiln.schema.json
    """
    from kiln.spec import spec_json_schema

    context.print_json(spec_json_schema())


def version(as_json: context.JsonOption = False) -> None:
    """Print the version of this CLI, and of the running kiln server with its installation id.

    Example:  kiln version
    """
    from kiln.client import NotThisKiln

    mine = kiln.version()
    client = context.client(timeout=2)
    where = client.endpoint.description
    try:
        identity: Identity | None = client.server_identity()
    except NotThisKiln:
        raise  # something else answers there: say so (exit 5), do not call it "not running"
    except KilnError:
        identity = None
    server = identity.version if identity else None
    installation = identity.installation_id if identity else None
    if as_json:
        context.print_json(
            {"cli": mine, "server": server, "url": where, "installation_id": installation}
        )
        return
    out = context.out()
    out.print(f"kiln {mine}")
    if identity is None:
        out.print(f"server not running at {where}")
    else:
        out.print(f"server {server} at {where}, installation {installation or 'unknown'}")
