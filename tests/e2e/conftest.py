"""End-to-end fixtures: one kiln server per test module, on the session's private dockerd."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import KilnHarness


@pytest.fixture(scope="module")
def kiln(dockerd, hello_images, tmp_path_factory) -> Iterator[KilnHarness]:  # type: ignore[no-untyped-def]
    harness = KilnHarness(tmp_path_factory.mktemp("kiln-home"), dockerd.docker_host)
    try:
        harness.start()
        yield harness
    finally:
        harness.teardown()


def hello_spec(
    app: str,
    tag: str,
    *,
    instances: int = 3,
    deadline: str = "30s",
    strategy: str = "rolling",
    network: str = "bridge",
    extra: str = "",
) -> str:
    """A kiln.yaml for the demo app, routed by host ``<app>.test``."""
    return f"""\
app: {app}
image: {tag}
port: 8080
instances: {instances}
health:
  http: /healthz
  interval: 1s
  timeout: 500ms
routes:
  - host: {app}.test
deploy:
  strategy: {strategy}
  deadline: {deadline}
  drain: 300ms
stop_grace: 2s
network: {network}
{extra}"""
