"""The live rollout view, as a terminal would show it."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from kiln.cli.progress import watch_rollout
from kiln.client import KilnClient
from kiln.model import AppKey

from .conftest import TOKEN, Kiln

WEB = AppKey("dev", "web")


def test_live_view_shows_header_instances_and_events_until_the_rollout_ends(kiln: Kiln) -> None:
    socket_path = Path(kiln.env["KILN_API_SOCKET"])
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160)
    with KilnClient(socket_path=socket_path, token=TOKEN, actor="t") as client:
        after = client.last_event_id()
        result = client.deploy("app: web\nimage: example/web:1\nport: 8080\ninstances: 2\n")
        outcome = watch_rollout(client, WEB, 1, after_event=after, console=console, live=True)
    assert outcome.state == "succeeded"
    text = screen.getvalue()
    assert result.rollout is not None
    for expected in (
        "dev/web",
        "release 1",
        "rolling",
        "r1-0",
        "r1-1",
        "IN ROUTER",
        "rollout.started",
    ):
        assert expected in text, expected
