"""Dashboard benchmark: first paint of its pages, and the delay from an event to the page.

    .venv/bin/python -m bench.dashboard [--loads 5] [--events 10]

A private dockerd and kiln (API on loopback TCP), the demo app with 2 instances, headless
Chromium (Debian's) signed in once. Prints one JSON line:

- ``first_paint_ms``: the browser's first-contentful-paint of the overview and of the app page
  (new page each time, cookie kept), median and max over ``--loads``;
- ``event_to_page_ms``: from an event's time in kiln's store (``at``) to the moment the page
  shows it in its event list (the page notes when each event id first appears), for
  ``--events`` scale changes made through the API; median and max. Both clocks are this
  machine's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
from playwright.sync_api import Page, sync_playwright

from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness
from tests.harness.dockerd import PrivateDockerd
from tests.harness.images import build_hello_image
from tests.ui.libraries import ensure_ui_libraries

APP = "board"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FCP = (
    "new Promise(done => { const seen = () => performance.getEntriesByName("
    "'first-contentful-paint'); if (seen().length) return done(seen()[0].startTime);"
    " new PerformanceObserver(() => done(seen()[0].startTime)).observe({type: 'paint',"
    " buffered: true}); })"
)


@contextlib.contextmanager
def bench_kiln() -> Iterator[KilnHarness]:
    workdir = Path(tempfile.mkdtemp(prefix="kiln-bench-dashboard-"))
    try:
        with PrivateDockerd() as engine:
            client = docker.DockerClient(base_url=engine.docker_host)
            build_hello_image(client, version="v1", variant="healthy", tag="kiln-hello:v1")
            client.close()
            home = workdir / "home"
            home.mkdir()
            kiln = KilnHarness(home, engine.docker_host, env={"KILN_API_TCP": "1"})
            try:
                kiln.start()
                yield kiln
            finally:
                kiln.teardown()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1)}


def first_paint(page: Page, url: str) -> float:
    page.goto(url, wait_until="load")
    return float(page.evaluate(FCP))


def event_delay(kiln: KilnHarness, page: Page, instances: int) -> float:
    last = kiln.api("GET", f"/v1/events?app={APP}&limit=1").json()
    after = last[-1]["id"] if last else 0
    answer = kiln.api("POST", f"/v1/apps/dev/{APP}/scale", json={"instances": instances})
    answer.raise_for_status()
    events = kiln.api("GET", f"/v1/events?app={APP}&after={after}&type=app.scaled").json()
    event = events[0]
    page.wait_for_function(f"window.kilnSeen && window.kilnSeen['{event['id']}']", timeout=30_000)
    seen_ms = float(page.evaluate(f"window.kilnSeen['{event['id']}']"))
    at_ms = datetime.fromisoformat(event["at"]).timestamp() * 1000
    return seen_ms - at_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--events", type=int, default=10)
    args = parser.parse_args()
    ensure_ui_libraries()
    result: dict[str, Any] = {"benchmark": "dashboard", "instances": 2}
    with bench_kiln() as kiln, sync_playwright() as playwright:
        assert kiln.deploy(hello_spec(APP, "kiln-hello:v1", instances=2), "--wait").returncode == 0
        base = f"http://127.0.0.1:{kiln.api_port}/ui"
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(base + "/login")
            page.fill("#token", kiln.token)
            page.click("button[type=submit]")
            page.wait_for_url(base + "/")
            paints: dict[str, list[float]] = {"overview": [], "app": []}
            for _ in range(args.loads):
                for name, url in (("overview", base + "/"), ("app", f"{base}/apps/dev/{APP}")):
                    fresh = context.new_page()
                    paints[name].append(first_paint(fresh, url))
                    fresh.close()
            result["first_paint_ms"] = {name: summary(v) for name, v in paints.items()}
            page.goto(f"{base}/apps/dev/{APP}")
            page.wait_for_selector("#live.on", timeout=30_000)
            delays = [event_delay(kiln, page, 3 if i % 2 == 0 else 2) for i in range(args.events)]
            result["event_to_page_ms"] = summary(delays)
        finally:
            browser.close()
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
