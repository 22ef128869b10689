"""Hostile or careless input never freezes kiln: an alias bomb and a 20 MB spec are refused
quickly while self-healing goes on, and a worker without a port runs like any app."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness, wait_until

pytestmark = pytest.mark.integration

ALIAS_BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}]"
        for i in range(8)
    ]
)


def test_alias_bomb_and_huge_spec_are_refused_while_a_killed_instance_is_replaced(
    kiln: KilnHarness,
) -> None:
    app = "hardy"
    assert kiln.deploy(hello_spec(app, "kiln-hello:v1", instances=2), "--wait").returncode == 0
    kiln.wait_ready(app, 2, release=1)
    victim = kiln.containers(app)[0]
    answers: dict[str, httpx.Response] = {}

    def hostile() -> None:
        answers["bomb"] = kiln.api("POST", "/v1/deploy", json={"spec": ALIAS_BOMB, "message": ""})
        huge = "app: " + app + "\nimage: x\nenv: {A: '" + "x" * 20_000_000 + "'}\n"
        answers["huge"] = kiln.api("POST", "/v1/deploy", json={"spec": huge, "message": ""})

    thread = threading.Thread(target=hostile)
    thread.start()
    kiln.docker.containers.get(victim.id).kill()
    wait_until(
        lambda: (
            victim.id not in {c.id for c in kiln.containers(app)}
            and len([i for i in kiln.status(app)["instances"] if i["ready"]]) == 2
        ),
        timeout=30,
        what="the killed instance replaced while hostile specs arrive",
    )
    thread.join(timeout=60)
    assert 400 <= answers["bomb"].status_code < 500, answers["bomb"].text[:300]
    assert len(answers["bomb"].content) < 10_000  # the input is never echoed back whole
    assert answers["huge"].status_code == 413, answers["huge"].text[:300]
    assert [r["number"] for r in kiln.cli_json("releases", app)] == [1]  # nothing was stored


def test_a_worker_without_a_port_runs_and_takes_no_route(kiln: KilnHarness) -> None:
    worker = "app: jobs\nimage: kiln-hello:v1\ninstances: 2\nstop_grace: 2s\n"
    result = kiln.deploy(worker, "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    status = kiln.status("jobs")
    assert status["state"] == "running"
    assert len([i for i in status["instances"] if i["ready"]]) == 2
    assert status["urls"] == []
    assert kiln.get("jobs.dev.localhost").status_code == 404
