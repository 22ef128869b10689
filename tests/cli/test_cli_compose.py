"""`kiln convert` and `kiln deploy -f compose.yaml` (a real local API over a FakeService)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner

from kiln.cli.main import app as kiln_app
from kiln.model import AppKey
from kiln.spec import parse_spec

from .conftest import Kiln, cli_env

EXAMPLE = Path(__file__).parents[2] / "examples" / "compose"


def stack(tmp_path: Path) -> Path:
    folder = tmp_path / "shop"
    shutil.copytree(EXAMPLE, folder)
    return folder / "compose.yaml"


def test_convert_prints_one_kiln_yaml_per_service_and_warns_on_stderr(tmp_path: Path) -> None:
    compose = stack(tmp_path)
    (compose.parent / ".env").write_text("DB_PASSWORD=from-dot-env\nAPP_IMAGE=shop:2\n")
    env = {**cli_env(tmp_path / "home"), "APP_IMAGE": "shop:3"}  # the shell wins over .env
    result = CliRunner().invoke(kiln_app, ["convert", str(compose), "-e", "staging"], env=env)
    assert result.exit_code == 0, result.output
    documents = [d for d in yaml.safe_load_all(result.stdout)]
    assert [d["app"] for d in documents] == ["web", "worker", "cache"]
    assert {d["environment"] for d in documents} == {"staging"}
    assert [d.get("image") for d in documents] == [None, "shop:3", "shop:3"]
    assert documents[0]["build"] == "./web"  # relative to the Compose file, as written
    assert "from-dot-env" in documents[0]["env"]["DATABASE_URL"]
    assert "warning: services.web.depends_on: ignored" in result.stderr
    for document in result.stdout.split("---\n")[1:]:
        assert parse_spec(document).app in ("worker", "cache")


def test_convert_out_writes_a_file_per_service(tmp_path: Path) -> None:
    compose = stack(tmp_path)
    out = tmp_path / "kiln"
    result = CliRunner().invoke(
        kiln_app, ["convert", str(compose), "-o", str(out)], env=cli_env(tmp_path / "home")
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "cache.kiln.yaml",
        "web.kiln.yaml",
        "worker.kiln.yaml",
    ]
    assert parse_spec((out / "worker.kiln.yaml").read_text()).instances == 1
    web = yaml.safe_load((out / "web.kiln.yaml").read_text())
    assert web["build"] == "../shop/web" and web["instances"] == 2  # relative to the file


def test_a_written_kiln_yaml_with_build_deploys_from_its_own_folder(
    kiln: Kiln, tmp_path: Path
) -> None:
    compose = stack(tmp_path)
    out = tmp_path / "kiln"
    converted = kiln.run("convert", str(compose), "-o", str(out))
    assert converted.exit_code == 0, converted.output
    result = kiln.run("deploy", "-f", str(out / "web.kiln.yaml"))
    assert result.exit_code == 0, result.output
    [(repository, tag, dockerfile)] = kiln.service.builds
    assert repository == "web" and tag.startswith("src-") and dockerfile == "Dockerfile"
    release = kiln.service.apps[AppKey("dev", "web")]
    assert release.stable == 1


def test_convert_names_every_unsupported_key_and_exits_2(tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "services:\n  db:\n    image: postgres:16\n    volumes: [./pg:/var/lib/postgresql/data]\n"
        "    network_mode: 'service:vpn'\n"
    )
    result = CliRunner().invoke(kiln_app, ["convert", str(compose)], env=cli_env(tmp_path / "h"))
    assert result.exit_code == 2, result.output
    assert f"{compose} has 2 problems" in result.stderr
    assert (
        "- services.db.volumes.0: './pg' is a host path, and a bind mount is not supported:"
        " kiln mounts no host paths" in result.stderr
    )
    assert "- services.db.network_mode: 'service:vpn' is not supported" in result.stderr
    assert result.stdout == ""


def test_deploy_of_a_compose_file_deploys_every_service(kiln: Kiln, tmp_path: Path) -> None:
    compose = stack(tmp_path)
    result = kiln.run("deploy", "-f", str(compose), "-m", "from compose")
    assert result.exit_code == 0, result.output
    for app in ("web", "worker", "cache"):
        assert f"dev/{app}: release 1 is live" in result.stdout
    assert kiln.service.apps[AppKey("dev", "web")].stable == 1
    assert kiln.service.apps[AppKey("dev", "cache")].stable == 1
    # web was built first (named after the app) and deployed by the built digest.
    assert [b[0] for b in kiln.service.builds] == ["web"]
    assert "build: web:src-" in result.stderr
    web = kiln.run("releases", "web", "--json")
    assert '"image": "registry.fake/web@sha256:' in web.stdout
    cache = kiln.run("releases", "cache", "--json")
    assert '"volumes"' in cache.stdout and "cache-data" in cache.stdout


def test_deploy_of_a_compose_file_into_an_environment(kiln: Kiln, tmp_path: Path) -> None:
    compose = stack(tmp_path)
    result = kiln.run("deploy", "-f", str(compose), "-e", "staging", "--no-wait")
    assert result.exit_code == 0, result.output
    assert {str(key) for key in kiln.service.apps} == {
        "staging/web",
        "staging/worker",
        "staging/cache",
    }


def test_image_and_build_tag_the_build_with_the_image(kiln: Kiln, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "web.Dockerfile").write_text("FROM scratch\n")
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "services:\n  web:\n    image: shop/web:1.4\n"
        "    build: {context: src, dockerfile: web.Dockerfile}\n    ports: ['8080']\n"
    )
    result = kiln.run("deploy", "-f", str(compose), "--no-wait")
    assert result.exit_code == 0, result.output
    assert kiln.service.builds == [("shop/web", "1.4", "web.Dockerfile")]


def test_a_failed_build_deploys_nothing(kiln: Kiln, tmp_path: Path) -> None:
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "services:\n  cache: {image: kiln-hello:v1}\n  web: {build: ./missing, ports: ['8080']}\n"
    )
    result = kiln.run("deploy", "-f", str(compose))
    assert result.exit_code == 2, result.output
    assert "missing is not a directory" in result.stderr
    assert kiln.service.apps == {}
