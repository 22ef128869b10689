"""A Compose file deploys on the real engine and NGINX: the web + worker + cache stack of
examples/compose converts, web is built from its source first, every service runs as an app, the
cache keeps its named volume across releases, and what kiln cannot run is named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.harness import KilnHarness, wait_until

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "compose"


def test_the_web_worker_cache_stack_converts_and_deploys(kiln: KilnHarness, tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    shutil.copytree(EXAMPLE, folder)
    converted = kiln.cli("convert", str(folder / "compose.yaml"))
    assert converted.returncode == 0, converted.stderr
    assert converted.stdout.count("app: ") == 3

    result = kiln.cli("deploy", "-f", str(folder / "compose.yaml"), "-m", "compose import")
    assert result.returncode == 0, result.stdout + result.stderr + kiln.server_log()
    assert "build: web:src-" in result.stderr  # built on kiln's engine before anything deployed

    kiln.wait_ready("web", 2, release=1)
    kiln.wait_ready("cache", 1, release=1)
    answer = wait_until(
        lambda: (r := kiln.get("shop.localhost")).status_code == 200 and r,
        timeout=10,
        what="the web app through its kiln.route.host label",
    )
    assert "hello from kiln demo v1" in answer.text
    # The page web/Dockerfile added: the release runs what was built, pinned by digest.
    assert kiln.get("shop.localhost", "/shop.html").text.strip() == "welcome to the shop"
    [web_release] = kiln.cli_json("releases", "web")
    assert "/web@sha256:" in web_release["image"]
    assert web_release["digest"] in web_release["image"]
    assert kiln.get("cache.dev.localhost", "/starts").text == "start\n"

    def worker_runs() -> bool:
        return [c.status for c in kiln.containers("worker")] == ["running"]

    wait_until(worker_runs, timeout=15, what="the worker's one instance")
    logs = wait_until(
        lambda: "tick on" in (out := kiln.cli("logs", "worker").stdout) and out,
        timeout=15,
        what="the worker's output",
    )
    assert "tick on" in logs

    # The limits of deploy.resources reached the engine.
    container = kiln.docker.containers.get(kiln.containers("web")[0].id)
    assert container.attrs["HostConfig"]["Memory"] == 64 * 1024**2
    assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
    worker = kiln.docker.containers.get(kiln.containers("worker")[0].id)
    assert worker.attrs["HostConfig"]["ReadonlyRootfs"] is False

    # A new release of the cache (one more variable) starts on the same volume; web's source
    # did not change, so its build is the recorded image and its release stays.
    compose = folder / "compose.yaml"
    compose.write_text(
        compose.read_text().replace(
            "    cap_add: [NET_BIND_SERVICE]",
            "    cap_add: [NET_BIND_SERVICE]\n    environment: {GEN: '2'}",
        )
    )
    again = kiln.cli("deploy", "-f", str(compose), "-m", "cache generation 2")
    assert again.returncode == 0, again.stdout + again.stderr + kiln.server_log()
    assert "(unchanged source)" in again.stderr and "dev/web: unchanged" in again.stdout
    kiln.wait_ready("cache", 1, release=2)
    assert kiln.get("cache.dev.localhost", "/starts").text == "start\nstart\n"
    [volume] = kiln.cli_json("volume", "ls", "cache")
    assert volume["name"] == "cache-data"


def test_an_unsupported_key_is_named_and_nothing_is_deployed(
    kiln: KilnHarness, tmp_path: Path
) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "services:\n"
        "  db:\n"
        "    image: kiln-hello:v1\n"
        "    volumes: [./pgdata:/var/lib/postgresql/data]\n"
        "  api:\n"
        "    image: kiln-hello:v1\n"
        "    ports: ['8080']\n"
        "volumes:\n"
        "  pgdata: {}\n"
    )
    result = kiln.cli("deploy", "-f", str(compose))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "services.db.volumes.0: './pgdata' is a host path, and a bind mount is not" in (
        result.stderr
    )
    assert kiln.api("GET", "/v1/apps/dev/api").status_code == 404
    assert kiln.containers("db") == [] and kiln.containers("api") == []
