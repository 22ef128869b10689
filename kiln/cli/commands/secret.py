"""``kiln secret set|ls|rm|rotate-key``: an app's secrets, encrypted at rest, versioned.

A value never goes on the command line (shell history, ``ps``): it comes from stdin, a file
(``--from-file``), or a prompt that does not echo. Setting one changes no running instance; a
release pins the versions it uses, so it takes effect with the next release (``--deploy``
makes it now) and ``kiln rollback`` brings the old value back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kiln.cli import context
from kiln.cli.commands.deploy import finish
from kiln.cli.secret_values import read_value
from kiln.errors import InvalidInput

HELP = (
    "An app's secrets: encrypted at rest (AES-256-GCM), versioned, pinned by each release, and"
    " delivered as files in /run/secrets (or env vars). Values are never shown."
)

AppArgument = Annotated[str, typer.Argument(help="APP or ENV/APP.", show_default=False)]
NameArgument = Annotated[
    str, typer.Argument(help="The secret's name, e.g. DB_PASSWORD.", show_default=False)
]


def set_(
    app: AppArgument,
    name: NameArgument,
    from_file: Annotated[
        Path | None,
        typer.Option("--from-file", help="Read the value from this file (bytes, as they are)."),
    ] = None,
    deploy: Annotated[
        bool,
        typer.Option("--deploy", help="Also make a new release with it (the current spec)."),
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="With --deploy: follow the rollout.")
    ] = True,
    env: context.EnvOption = None,
    as_json: context.JsonOption = False,
) -> None:
    """Set a secret: the value comes from stdin, --from-file, or a prompt (never an argument).

    Running instances keep the version they started with; the next release pins the new one
    (--deploy makes that release now, with the current image and spec).

    Examples:  printf %s "$PW" | kiln secret set web DB_PASSWORD
               kiln secret set staging/web TLS_KEY --from-file key.pem --deploy
    """
    from kiln.spec import secret_name_problem

    key = context.resolve_app(app, env)
    if problem := secret_name_problem(name):
        raise InvalidInput(problem)
    value = read_value(from_file, name)
    kiln = context.client()
    after = kiln.last_event_id(key) if deploy else 0
    result = kiln.set_secret(key, name, value, deploy=deploy)
    del value
    if not deploy or result.deploy is None:
        if as_json:
            context.print_json(result.model_dump(mode="json"))
        else:
            what = (
                f"version {result.version}"
                if result.changed
                else (f"unchanged: version {result.version} already holds this value")
            )
            context.out().print(
                f"{key}: secret {name} {what}; it takes effect with the next release"
            )
        return
    if not as_json:
        context.out().print(
            f"{key}: secret {name} version {result.version}"
            + ("" if result.changed else " (unchanged)")
        )
    finish(kiln, result.deploy, after_event=after, wait=wait, as_json=as_json, verb="deploy")


def ls(
    app: AppArgument, env: context.EnvOption = None, as_json: context.JsonOption = False
) -> None:
    """List an app's secrets: name, newest version, versions kept, who set it, when, and the
    version the current release uses. Never a value.

    Example:  kiln secret ls web
    """
    key = context.resolve_app(app, env)
    secrets = context.client().list_secrets(key)
    if as_json:
        context.print_json([s.model_dump(mode="json") for s in secrets])
        return
    out = context.out()
    if not secrets:
        out.print(f"{key}: no secrets (set one with `kiln secret set {key} NAME`)")
        return
    from kiln.cli.render import ago

    out.print(f"{'NAME':<24} {'VERSION':>7} {'IN USE':>6} {'VERSIONS':>8}  SET")
    for s in secrets:
        in_use = str(s.in_use) if s.in_use is not None else "-"
        out.print(
            f"{s.name:<24} {s.version:>7} {in_use:>6} {s.versions:>8}  "
            f"{ago(s.created_at)} by {s.created_by}",
            markup=False,
        )


def rm(app: AppArgument, name: NameArgument, env: context.EnvOption = None) -> None:
    """Remove a secret and every version of it (refused while a serving release uses it).

    Example:  kiln secret rm web OLD_TOKEN
    """
    key = context.resolve_app(app, env)
    context.client().remove_secret(key, name)
    context.out().print(f"{key}: secret {name} removed")


def rotate_key(as_json: context.JsonOption = False) -> None:
    """Re-encrypt every secret under a new master key. Running instances are not touched.

    With the key in $KILN_HOME/master.key kiln makes the new key and drops the old one once
    nothing uses it. With KILN_MASTER_KEY, put the new key first (NEW,OLD), restart kiln, run
    this, then drop OLD.
    """
    rotation = context.client().rotate_master_key()
    if as_json:
        context.print_json(rotation.model_dump(mode="json"))
        return
    out = context.out()
    out.print(
        f"master key {rotation.key_id}: {rotation.reencrypted} secret version(s) re-encrypted"
    )
    if rotation.retired:
        out.print(f"old key(s) {', '.join(rotation.retired)} removed from master.key")
    if rotation.unused_env_keys:
        out.print(
            f"KILN_MASTER_KEY key(s) {', '.join(rotation.unused_env_keys)} are no longer needed"
        )
