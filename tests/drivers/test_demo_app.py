"""The demo app (examples/hello) is what the integration tests and `kiln demo` deploy."""

from __future__ import annotations

import pytest

from kiln.spec.parse import parse_spec
from tests.harness.images import HELLO_DIR, HELLO_IMAGES, ImageBuildError, render_context


def test_demo_spec_is_valid_and_routes_any_host_to_the_app() -> None:
    spec = parse_spec((HELLO_DIR / "kiln.yaml").read_text())
    assert (spec.app, spec.image, spec.port, spec.instances) == ("hello", "kiln-hello:v1", 8080, 3)
    health = spec.effective_health()
    assert health is not None and health.http == "/healthz"
    assert [(r.host, r.path) for r in spec.effective_routes()] == [(None, "/")]


def test_every_demo_version_and_variant_has_its_own_build_context() -> None:
    contexts = {render_context(i.version, i.variant) for i in HELLO_IMAGES}
    assert len(contexts) == len(HELLO_IMAGES)
    assert render_context("v1", "healthy") == render_context("v1", "healthy")  # reproducible


@pytest.mark.parametrize(("version", "variant"), [("v1", "sideways"), ("v1; rm -rf /", "healthy")])
def test_render_rejects_an_unknown_variant_or_an_unsafe_version(version: str, variant: str) -> None:
    with pytest.raises(ImageBuildError, match=r"VARIANT|VERSION"):
        render_context(version, variant)
