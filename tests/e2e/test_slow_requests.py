"""Zero failed requests includes slow ones: requests in flight when a rolling deploy starts
finish on the instance that took them (it is stopped only once they are done), and NGINX never
runs one twice."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.e2e.harness import KilnHarness, wait_until

pytestmark = pytest.mark.integration

SPEC = """\
app: {app}
image: {tag}
port: 8080
instances: 2
health: {{http: /healthz, interval: 500ms, timeout: 500ms}}
routes: [{{host: {app}.test}}]
"""  # the default deploy settings: drain bound 30 s


def test_slow_gets_and_posts_in_flight_across_a_deploy_all_complete_once(
    kiln: KilnHarness,
) -> None:
    app = "slow"
    assert kiln.deploy(SPEC.format(app=app, tag="kiln-hello:v1"), "--wait").returncode == 0
    kiln.wait_ready(app, 2, release=1)
    url = f"http://127.0.0.1:{kiln.http_port}/cgi-bin/slow?5"
    results: dict[str, httpx.Response | BaseException] = {}

    def call(name: str, method: str) -> None:
        try:
            results[name] = httpx.request(
                method,
                url,
                headers={"Host": f"{app}.test", "X-Request-Name": name},
                content=b"order=1" if method == "POST" else None,
                timeout=60,
            )
        except httpx.HTTPError as exc:
            results[name] = exc

    threads = [
        threading.Thread(target=call, args=(f"{method}-{n}", method))
        for method in ("GET", "POST")
        for n in range(5)
    ]
    for thread in threads:
        thread.start()
    time.sleep(1)  # every request has reached an instance of release 1
    assert kiln.deploy(SPEC.format(app=app, tag="kiln-hello:v2"), "--wait").returncode == 0
    for thread in threads:
        thread.join(timeout=60)

    assert len(results) == 10
    for name, outcome in sorted(results.items()):
        assert isinstance(outcome, httpx.Response), f"{name}: {outcome!r}"
        assert outcome.status_code == 200, f"{name}: {outcome.status_code} {outcome.text}"
        assert "v1" in outcome.text and "slow" in outcome.text, outcome.text
    kiln.wait_ready(app, 2, release=2)

    # Each request reached exactly one upstream (a replay would list two addresses).
    log = kiln.settings.nginx_dir / "logs" / "access.log"

    def slow_lines() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        return [entry for entry in lines if str(entry.get("uri", "")).endswith("/cgi-bin/slow")]

    entries = wait_until(lambda: len(s := slow_lines()) >= 10 and s, timeout=10, what="log")
    assert len(entries) == 10
    for entry in entries:
        assert "," not in str(entry["upstream_addr"]), entry
        assert entry["status"] == 200, entry
