"""The dashboard in a real headless Chromium, over a real kiln, dockerd and NGINX: a user signs
in, watches a canary start (steps, both releases' charts), aborts it from the page and sees the
rollback; a forged action without the session's CSRF token is refused.

Screenshots are saved as artifacts: the directory is printed (``-s`` shows it), under pytest's
tmp dir, or ``$KILN_TEST_ARTIFACTS/dashboard`` when that is set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness, wait_until
from tests.e2e.load import LoadClient
from tests.ui.libraries import ensure_ui_libraries

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
APP = "dash"
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def kiln(dockerd, hello_images, tmp_path_factory) -> Iterator[KilnHarness]:  # type: ignore[no-untyped-def]
    """A kiln whose API (and so the dashboard) also listens on loopback TCP for the browser."""
    harness = KilnHarness(
        tmp_path_factory.mktemp("kiln-home"), dockerd.docker_host, env={"KILN_API_TCP": "1"}
    )
    try:
        harness.start()
        yield harness
    finally:
        harness.teardown()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ensure_ui_libraries()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = os.environ.get("KILN_TEST_ARTIFACTS")
    folder = Path(root) / "dashboard" if root else tmp_path_factory.mktemp("dashboard-screens")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard screenshots: {folder}")
    return folder


def base_url(kiln: KilnHarness) -> str:
    return f"http://127.0.0.1:{kiln.api_port}"


def sign_in(page: Page, kiln: KilnHarness) -> None:
    page.goto(base_url(kiln) + "/ui/")
    expect(page).to_have_url(base_url(kiln) + "/ui/login")
    page.fill("#token", kiln.token)
    page.click("button[type=submit]")
    expect(page).to_have_url(base_url(kiln) + "/ui/")


def deploy(kiln: KilnHarness, spec: str, message: str) -> None:
    answer = kiln.api("POST", "/v1/deploy", json={"spec": spec, "message": message})
    assert answer.status_code == 201, answer.text


def canary_spec() -> str:
    """Release 2 as a canary that holds 30 % of the requests until someone acts."""
    spec = hello_spec(APP, "kiln-hello:v2", instances=2, strategy="canary")
    return spec.replace(
        "  drain: 300ms\n",
        "  drain: 300ms\n  steps: [{weight: 30}]\n  canary_instances: 1\n"
        "  analysis: {interval: 2s, min_requests: 5, max_error_rate: 50%}\n",
    )


def first_release(kiln: KilnHarness) -> None:
    result = kiln.deploy(hello_spec(APP, "kiln-hello:v1", instances=2), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    kiln.wait_ready(APP, 2, release=1)


def test_watch_a_canary_abort_it_from_the_page_and_see_the_rollback(
    kiln: KilnHarness, browser: Browser, shots: Path
) -> None:
    first_release(kiln)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

    sign_in(page, kiln)
    row = page.locator(f'tr[data-app="{APP}"]')
    expect(row).to_contain_text("running")
    expect(row).to_contain_text("2/2 ready")
    cookie = next(c for c in context.cookies() if c["name"] == "kiln_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.screenshot(path=str(shots / "1-overview.png"), full_page=True)

    page.click(f'a[href="/ui/apps/dev/{APP}"]')
    expect(page.locator("#target-release")).to_have_text("1")
    expect(page.locator("#live")).to_have_class("live on", timeout=WAIT_MS)

    with LoadClient(
        port=kiln.http_port, host_header=f"{APP}.test", keep_alive=True, rate=40, max_seconds=240
    ) as load:
        load.wait_for_requests(20)
        deploy(kiln, canary_spec(), "try v2 on 30%")
        # The page follows by itself: no reload from here on.
        steps = page.locator("#steps")
        expect(steps.locator("li.current")).to_have_text("30%", timeout=WAIT_MS)
        expect(page.locator('#groups tr[data-role="canary"]')).to_contain_text(
            "30%", timeout=WAIT_MS
        )
        expect(page.locator("#releases")).to_contain_text("try v2 on 30%")
        expect(page.locator("#events")).to_contain_text("rollout.started", timeout=WAIT_MS)
        # Both releases' lines in each chart, with a few points of the canary's own traffic.
        page.wait_for_function(
            "Number(document.body.dataset.chartPoints) >= 4"
            " && document.body.dataset.chartReleases === '1,2'"
            " && !/release 2: 0 requests/.test(document.getElementById('chart-legend').textContent)",
            timeout=WAIT_MS,
        )
        for chart in ("#chart-rate", "#chart-errors", "#chart-p95"):
            legend = page.locator(f"{chart} .u-legend")
            expect(legend).to_contain_text("release 1")
            expect(legend).to_contain_text("release 2")
        # Each instance's memory, from the metrics sampler (its cgroup).
        expect(page.locator("#instances")).to_contain_text(
            re.compile(r"[0-9.]+ (KiB|MiB|GiB)"), timeout=WAIT_MS
        )
        # The verdicts, with the numbers behind them.
        expect(page.locator("#last-verdict")).to_contain_text("pass", timeout=WAIT_MS)
        expect(page.locator("#verdict-numbers")).to_be_visible()
        page.screenshot(path=str(shots / "2-canary.png"), full_page=True)

        page.click('button[data-action="abort"]')
        expect(page.locator("#confirm")).to_be_visible()
        expect(page.locator("#confirm-text")).to_contain_text("Abort the rollout of dash")
        page.click("#confirm-ok")
        expect(page.locator("#notice")).to_contain_text("aborted", timeout=WAIT_MS)
        expect(page.locator("#rollout-state")).to_have_text("aborted", timeout=WAIT_MS)
        expect(page.locator("#events")).to_contain_text("rollout.aborted", timeout=WAIT_MS)
        expect(page.locator("#target-release")).to_have_text("1", timeout=WAIT_MS)
        # The next round takes the canary out of the router: the page follows.
        expect(page.locator('#groups tr[data-role="held"]')).to_contain_text("0%", timeout=WAIT_MS)
        page.screenshot(path=str(shots / "3-aborted.png"), full_page=True)
        load.stop()

    status = kiln.status(APP)
    assert status["target_release"] == 1 and status["rollout"] is None
    aborted = [
        e for e in kiln.api("GET", f"/v1/events?app={APP}").json() if e["kind"] == "rollout.aborted"
    ]
    assert aborted and "(dashboard)" in aborted[-1]["reason"]
    # Every answer comes from release 1 again.
    wait_until(
        lambda: all("v1" in kiln.get(f"{APP}.test").text for _ in range(10)),
        timeout=15,
        what="all traffic back on release 1",
    )

    # The same refusal as the API's, shown as the API words it: nothing to abort now.
    page.click('button[data-action="abort"]')
    page.click("#confirm-ok")
    expect(page.locator("#notice")).to_contain_text("abort refused", timeout=WAIT_MS)
    refused = kiln.api("POST", f"/v1/apps/dev/{APP}/rollout/abort").json()["error"]["message"]
    expect(page.locator("#notice")).to_contain_text(refused)
    assert not [e for e in console_errors if "409" not in e], console_errors
    context.close()


def test_a_forged_action_without_the_sessions_csrf_token_is_refused(
    kiln: KilnHarness, browser: Browser, shots: Path
) -> None:
    if kiln.api("GET", f"/v1/apps/dev/{APP}").status_code == 404:
        first_release(kiln)
    before = kiln.status(APP)["scale"]
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, kiln)
    url = f"{base_url(kiln)}/ui/actions/dev/{APP}/scale"
    # The browser sends the session cookie (same site), but a forger cannot read the page's
    # CSRF token: without it, and with a wrong one, the action is refused.
    for headers in ({}, {"X-Kiln-CSRF": "f" * 64}):
        answer = page.request.post(url, data={"instances": before + 3}, headers=headers)
        assert answer.status == 403, answer.text()
        assert "CSRF" in answer.json()["error"]["message"]
    # A page on another origin posting a form: the cookie is SameSite=Strict, so kiln sees no
    # session at all.
    other = browser.new_context()
    forged = other.new_page()
    forged.set_content(
        f'<form method="post" action="{url}"><input name="instances" value="9"></form>'
        "<script>document.forms[0].submit()</script>"
    )
    forged.wait_for_load_state()
    other.close()
    assert kiln.status(APP)["scale"] == before
    # With the page's own token the same action goes through.
    page.goto(f"{base_url(kiln)}/ui/apps/dev/{APP}")
    csrf = page.locator('meta[name="kiln-csrf"]').get_attribute("content")
    answer = page.request.post(url, data={"instances": before}, headers={"X-Kiln-CSRF": csrf or ""})
    assert answer.status == 200, answer.text()
    context.close()


def test_the_app_page_fits_a_phone(kiln: KilnHarness, browser: Browser, shots: Path) -> None:
    if kiln.api("GET", f"/v1/apps/dev/{APP}").status_code == 404:
        first_release(kiln)
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    sign_in(page, kiln)
    page.goto(f"{base_url(kiln)}/ui/apps/dev/{APP}")
    expect(page.locator("#target-release")).to_be_visible()
    expect(page.locator("#chart-rate .u-legend")).to_be_visible(timeout=WAIT_MS)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone"
    page.screenshot(path=str(shots / "4-phone.png"), full_page=True)
    context.close()


def test_a_viewer_sees_the_app_but_its_actions_are_refused(
    kiln: KilnHarness, browser: Browser, shots: Path
) -> None:
    if kiln.api("GET", f"/v1/apps/dev/{APP}").status_code == 404:
        first_release(kiln)
    created = kiln.api("POST", "/v1/tokens", json={"name": "eve-viewer", "role": "viewer"})
    assert created.status_code == 201, created.text
    viewer_token = created.json()["token"]
    before = kiln.status(APP)["scale"]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(base_url(kiln) + "/ui/login")
    page.fill("#token", viewer_token)
    page.click("button[type=submit]")
    expect(page.locator(f'tr[data-app="{APP}"]')).to_be_visible()
    page.goto(f"{base_url(kiln)}/ui/apps/dev/{APP}")
    expect(page.locator("#look-only")).to_contain_text("viewer")
    expect(page.locator('button[data-action="abort"]')).to_be_disabled()
    page.screenshot(path=str(shots / "5-viewer.png"), full_page=True)
    csrf = page.locator('meta[name="kiln-csrf"]').get_attribute("content") or ""
    answer = page.request.post(
        f"{base_url(kiln)}/ui/actions/dev/{APP}/scale",
        data={"instances": before + 1},
        headers={"X-Kiln-CSRF": csrf},
    )
    assert answer.status == 403
    assert "may not deploy" in answer.json()["error"]["message"]
    assert kiln.status(APP)["scale"] == before
    context.close()
