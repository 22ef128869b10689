"""kiln build and kiln images end to end: a source directory (the demo app, rendered offline)
is built on the engine, labelled with its provenance, pushed, deployed by digest; a rebuild of
unchanged source gives the same digest without building; prune keeps what releases need."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kiln.registry.embedded import EmbeddedRegistry
from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KilnHarness
from tests.harness.images import HELLO_DIR

pytestmark = pytest.mark.integration


def render(directory: Path, version: str) -> Path:
    subprocess.run(
        ["sh", str(HELLO_DIR / "render.sh"), version, "healthy", str(directory)], check=True
    )
    return directory


def git_commit(directory: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(directory), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "source")
    return git("rev-parse", "HEAD")


def manifest_exists(kiln: KilnHarness, repository: str, digest: str) -> bool:
    host = EmbeddedRegistry(kiln.home / "registry").host
    answer = httpx.head(
        f"http://{host}/v2/{repository}/manifests/{digest}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=5,
    )
    return answer.status_code == 200


@pytest.fixture(scope="module")
def kiln(dockerd, hello_images, tmp_path_factory) -> Iterator[KilnHarness]:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("kiln-home-build")
    # Prune keeps the last release of each app (and what runs): small enough to see it work.
    (home / "settings.yaml").write_text("registry:\n  retain_releases: 1\n")
    harness = KilnHarness(home, dockerd.docker_host)
    try:
        harness.start()
        yield harness
    finally:
        harness.teardown()


def test_build_labels_provenance_pushes_and_a_rebuild_of_the_same_source_is_the_same_digest(
    kiln: KilnHarness, tmp_path: Path
) -> None:
    source = render(tmp_path / "src", "b1")
    commit = git_commit(source)
    first = kiln.cli("build", str(source), "-t", "built:1.0")
    assert first.returncode == 0, first.stdout + first.stderr
    reference = first.stdout.strip()
    host = EmbeddedRegistry(kiln.home / "registry").host
    assert reference.startswith(f"{host}/built@sha256:")
    assert "built and pushed" in first.stderr

    again = kiln.cli_json("build", str(source), "-t", "built:1.0")
    assert again["reference"] == reference and again["cached"] is True

    image = kiln.docker.images.get("built:1.0")
    labels = image.labels
    assert labels["org.opencontainers.image.revision"] == commit
    assert labels["io.kiln.build.dirty"] == "false"
    assert labels["io.kiln.build.source-hash"].startswith("sha256:")
    assert labels["org.opencontainers.image.created"].startswith("20")
    assert "kiln" in labels["io.kiln.build.builder"]

    # Deployed by that digest, it serves; `kiln images` says where it runs.
    result = kiln.deploy(hello_spec("built", reference, instances=2), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert all("b1" in kiln.get("built.test").text for _ in range(4))
    [entry] = kiln.cli_json("images", "built")
    assert entry["reference"] == reference and entry["size"] > 1_000_000
    assert entry["provenance"]["org.opencontainers.image.revision"] == commit
    assert entry["releases"] == ["dev/built#1"]
    assert entry["running"] == ["dev/built#1: 2 running"]
    table = kiln.cli("images")
    assert table.returncode == 0 and "built:1.0" in table.stdout


def test_a_changed_source_under_a_used_tag_is_refused_naming_both(
    kiln: KilnHarness, tmp_path: Path
) -> None:
    source = render(tmp_path / "src", "c1")
    first = kiln.cli("build", str(source), "-t", "changing:1")
    assert first.returncode == 0, first.stderr
    (source / "rootfs" / "www" / "index.html").write_text("changed\n")
    second = kiln.cli("build", str(source), "-t", "changing:1")
    assert second.returncode == 7, second.stdout + second.stderr
    message = " ".join(second.stderr.split())
    assert first.stdout.strip().split("@")[1] in message and "immutable" in message
    # Without -t the tag comes from the source: a new one, so it builds.
    third = kiln.cli("build", str(source), "-t", "changing")
    assert third.returncode == 0, third.stderr
    assert third.stdout.strip() != first.stdout.strip()


def test_deploy_builds_a_spec_that_says_build(kiln: KilnHarness, tmp_path: Path) -> None:
    render(tmp_path / "app" / "src", "d1")
    spec = hello_spec("frombuild", "PLACEHOLDER", instances=1).replace(
        "image: PLACEHOLDER", "build: src"
    )
    (tmp_path / "app" / "kiln.yaml").write_text(spec)
    result = kiln.cli("deploy", "-f", str(tmp_path / "app" / "kiln.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert all("d1" in kiln.get("frombuild.test").text for _ in range(3))
    [release] = kiln.cli_json("releases", "frombuild")
    assert "/frombuild@sha256:" in release["digest"]
    # Nothing changed: the same image and spec, no new release.
    again = kiln.cli("deploy", "-f", str(tmp_path / "app" / "kiln.yaml"))
    assert again.returncode == 0 and "unchanged" in again.stdout


def test_prune_keeps_what_releases_inside_retention_and_running_instances_need(
    kiln: KilnHarness, tmp_path: Path
) -> None:
    references = []
    for version in ("p1", "p2", "p3"):
        built = kiln.cli(
            "build", str(render(tmp_path / version, version)), "-t", f"pruned:{version}"
        )
        assert built.returncode == 0, built.stderr
        references.append(built.stdout.strip())
    for reference in references[:2]:
        deployed = kiln.deploy(hello_spec("pruned", reference, instances=1), "--wait")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    # pruned:p1 — release 1, outside retention (1), not running: goes.
    # pruned:p2 — release 2: the app's last release, running: stays.
    # pruned:p3 — built, never released: goes.
    dry = json.loads(kiln.cli("images", "prune", "--dry-run", "--json").stdout)

    def ours(entries: list[dict[str, str]]) -> list[str]:
        return sorted(e["tag"] for e in entries if e["repository"] == "pruned")

    assert ours(dry["removed"]) == ["p1", "p3"]
    # Images the module's other tests built and never released go too; what runs stays.
    assert "built" not in {e["repository"] for e in dry["removed"]}
    assert all(manifest_exists(kiln, "pruned", r.split("@")[1]) for r in references)

    report = kiln.cli_json("images", "prune")
    assert ours(report["removed"]) == ["p1", "p3"]
    assert "p2" in {e["tag"] for e in report["kept"]}
    digests = [r.split("@")[1] for r in references]
    assert [manifest_exists(kiln, "pruned", d) for d in digests] == [False, True, False]
    assert {e["tag"] for e in kiln.cli_json("images", "pruned")} == {"p2"}
    # Every app still serves (images of other apps' last releases were kept too).
    assert all("p2" in kiln.get("pruned.test").text for _ in range(3))
    assert all("b1" in kiln.get("built.test").text for _ in range(3))
    # And the registry takes pushes again after its read-only collection.
    rebuilt = kiln.cli("build", str(tmp_path / "p1"), "-t", "pruned:p1")
    assert rebuilt.returncode == 0, rebuilt.stderr
