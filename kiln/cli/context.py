"""What every command needs: settings, a client, consoles, and ``APP`` → ``AppKey``.

Imported by every command module, so it imports nothing heavy at module level: the client
(httpx, pydantic, the models), settings and Rich are imported by the function that needs them
(see "Start-up" in kiln/cli/README.md).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kiln.errors import InvalidInput

if TYPE_CHECKING:
    from rich.console import Console

    from kiln.client import KilnClient
    from kiln.config import Settings
    from kiln.model import AppKey

DEFAULT_ENV = "dev"

EnvOption = Annotated[
    str | None,
    typer.Option(
        "--env",
        "-e",
        envvar="KILN_ENV",
        help="Environment of APP when APP has no ENV/ prefix [default: $KILN_ENV or dev].",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON on stdout, nothing else.")
]


def settings(*, file_on_first_use: bool = False) -> Settings:
    """``file_on_first_use``: read the settings file only if the command uses it (a client on
    the unix socket does not); else a bad settings file stops the command here."""
    from kiln.config import Settings

    return Settings.from_env(file_on_first_use=file_on_first_use)


def actor() -> str:
    """``user@host`` on the X-Kiln-Actor header, so releases say who made them."""
    try:
        user = os.environ.get("USER") or getpass.getuser()
        return f"{user}@{socket.gethostname()}"
    except (OSError, KeyError):
        return "cli"


_open_clients: list[KilnClient] = []


def client(*, timeout: float = 30) -> KilnClient:
    """A client for this command; closed by ``close_clients`` when the command ends."""
    from kiln.client import KilnClient

    kiln = KilnClient.from_settings(
        settings(file_on_first_use=True), actor=actor(), timeout=timeout
    )
    _open_clients.append(kiln)
    return kiln


def close_clients() -> None:
    while _open_clients:
        _open_clients.pop().close()


def out() -> Console:
    # Made per call: test runners swap sys.stdout between invocations.
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False, soft_wrap=False, width=_width(sys.stdout))


def err() -> Console:
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False, width=_width(sys.stderr))


def _width(stream: object) -> int | None:
    """Rich's own guess on a terminal (or $COLUMNS); piped into a file or another program,
    wide enough that table rows and event lines stay on one line each."""
    isatty = getattr(stream, "isatty", None)
    if os.environ.get("COLUMNS") or (isatty is not None and isatty()):
        return None
    return 200


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def resolve_app(app: str, env: str | None) -> AppKey:
    """``ENV/APP``, or ``APP`` in ``--env`` (default ``$KILN_ENV``, else ``dev``)."""
    from kiln.model import AppKey
    from kiln.spec.grammar import is_name

    if "/" in app:
        prefix, _, name = app.partition("/")
        if env is not None and env != prefix:
            raise InvalidInput(f"{app!r} names environment {prefix!r} but --env says {env!r}")
        key = AppKey(prefix, name)
    else:
        key = AppKey(env or DEFAULT_ENV, app)
    for kind, value in (("environment", key.environment), ("app", key.app)):
        if not is_name(value):
            raise InvalidInput(
                f"{value!r} is not a valid {kind} name: use lowercase letters, digits and -"
            )
    return key
