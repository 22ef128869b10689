"""A user keeps a database password in kiln: set from stdin, delivered as a file, changed with a
new release, rolled back — and the value is found nowhere kiln writes or shows."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import hello_spec
from tests.e2e.harness import KILN_CLI, REPO, KilnHarness, wait_until

pytestmark = pytest.mark.integration

APP = "vault"
FIRST = "first-pw-7c41d9e2b8"
SECOND = "second-pw-a05f3e9916"
SPEC = hello_spec(
    APP, "kiln-hello:v1", instances=2, extra="secrets: [DB_PASSWORD, {name: TOKEN, as: env}]\n"
)


def command_lines() -> list[bytes]:
    lines = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                lines.append((proc / "cmdline").read_bytes())
            except OSError:
                continue  # it exited meanwhile
    return lines


def set_secret_from_stdin(kiln: KilnHarness, name: str, value: str, *args: str) -> str:
    """``kiln secret set`` with the value on stdin; the process list is read while it runs."""
    process = subprocess.Popen(
        [*KILN_CLI, "secret", "set", APP, name, *args],
        env=kiln.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stdin is not None
    # While it waits for stdin the command is fully started: its argv is what `ps` shows.
    wait_until(
        lambda: any(b"secret\0set\0" + APP.encode() in line for line in command_lines()),
        timeout=30,
        what="kiln secret set to start",
    )
    assert not any(value.encode() in line for line in command_lines())
    out, err = process.communicate(value.encode(), timeout=120)
    assert process.returncode == 0, out.decode() + err.decode()
    assert value.encode() not in out + err
    return out.decode()


def secret_in_instances(kiln: KilnHarness, release: int) -> set[str]:
    values = set()
    for container in kiln.containers(APP):
        if container.labels.get("io.kiln.release") != str(release) or container.status != "running":
            continue
        result = kiln.docker.containers.get(container.id).exec_run(
            ["/bin/busybox", "cat", "/run/secrets/DB_PASSWORD"]
        )
        assert result.exit_code == 0, result.output
        values.add(result.output.decode())
    return values


def test_a_secret_is_pinned_by_releases_rolled_back_and_never_leaks(kiln: KilnHarness) -> None:
    answers: list[bytes] = []
    refused = kiln.deploy(SPEC, "--wait")
    assert refused.returncode == 2 and "DB_PASSWORD is not set" in refused.stderr

    set_secret_from_stdin(kiln, "DB_PASSWORD", FIRST)
    set_secret_from_stdin(kiln, "TOKEN", "token-value-1")
    deployed = kiln.deploy(SPEC, "--wait")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    kiln.wait_ready(APP, 2, release=1)
    assert secret_in_instances(kiln, 1) == {FIRST}

    changed = set_secret_from_stdin(kiln, "DB_PASSWORD", SECOND, "--deploy")
    assert "version 2" in changed
    kiln.wait_ready(APP, 2, release=2)
    found = secret_in_instances(kiln, 2)
    assert found == {SECOND}, (found, kiln.containers(APP), kiln.status(APP))

    back = kiln.cli("rollback", APP)
    assert back.returncode == 0, back.stdout + back.stderr
    kiln.wait_ready(APP, 2, release=3)
    found = secret_in_instances(kiln, 3)
    assert found == {FIRST}, (found, kiln.containers(APP), kiln.status(APP))

    listing = kiln.cli_json("secret", "ls", APP)
    assert [(s["name"], s["version"], s["in_use"]) for s in listing] == [
        ("DB_PASSWORD", 2, 1),
        ("TOKEN", 1, 1),
    ]
    releases = kiln.cli_json("releases", APP)
    assert [r["secrets"]["DB_PASSWORD"] for r in releases] == [1, 2, 1]
    assert kiln.get(f"{APP}.test").status_code == 200  # NGINX logged a request

    # Nowhere: every API answer, events, status, docker inspect, the store, kiln's and NGINX's logs.
    for path in (
        f"/v1/apps/dev/{APP}",
        f"/v1/apps/dev/{APP}/releases",
        f"/v1/apps/dev/{APP}/secrets",
        f"/v1/apps/dev/{APP}/rollout",
        "/v1/events?limit=1000",
        "/v1/apps",
    ):
        answers.append(kiln.api("GET", path).content)
    for args in (("status", APP), ("events", APP), ("ps", APP)):
        answers.append(kiln.cli(*args, "--json").stdout.encode())
    answers.append(kiln.cli("secret", "ls", APP).stdout.encode())
    inspected = [
        json.dumps(kiln.docker.api.inspect_container(c.id)).encode() for c in kiln.containers(APP)
    ]
    files = [
        path
        for root in (kiln.home, kiln.settings.nginx_dir)
        for path in Path(root).rglob("*")
        if path.is_file() and not path.is_symlink() and path.name != "master.key"
    ]
    assert any(p.name == "kiln.db-wal" or p.name == "kiln.db" for p in files)
    for value in (FIRST, SECOND):
        needle = value.encode()
        assert not [a for a in answers if needle in a]
        assert not [i for i in inspected if needle in i]
        assert not [str(p) for p in files if needle in p.read_bytes()]


def test_a_secret_can_come_from_a_file_or_a_variable_at_deploy_time(
    kiln: KilnHarness, tmp_path: Path
) -> None:
    value_file = tmp_path / "pw"
    value_file.write_text("from-a-file-3e7a")
    spec = hello_spec(
        "fromfile",
        "kiln-hello:v1",
        instances=1,
        extra=f"secrets: [{{name: DB_PASSWORD, from_file: {value_file}}},"
        " {name: TOKEN, as: env, from_env: MY_TOKEN}]\n",
    )
    path = tmp_path / "kiln.yaml"
    path.write_text(spec)
    env = {**kiln.env, "MY_TOKEN": "from-a-variable"}
    result = subprocess.run(
        [*KILN_CLI, "deploy", "-f", str(path), "--wait"],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kiln.wait_ready("fromfile", 1, release=1)
    (container,) = kiln.containers("fromfile")
    run = kiln.docker.containers.get(container.id).exec_run
    assert run(["/bin/busybox", "cat", "/run/secrets/DB_PASSWORD"]).output == b"from-a-file-3e7a"
    assert "TOKEN=from-a-variable" in run(["/bin/busybox", "env"]).output.decode()
