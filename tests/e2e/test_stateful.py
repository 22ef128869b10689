"""A stateful app (examples/counter: a counter on a volume) through new releases, a kill -9 of
its instance, a kiln restart, a snapshot and a restore: nothing acknowledged to a client is lost,
and a corrupted snapshot is refused."""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.e2e.harness import REPO, KilnHarness, wait_until

pytestmark = pytest.mark.integration

COUNTER_DIR = REPO / "examples" / "counter"
APP = "counter"


def build_counter(client: docker.DockerClient, version: str) -> str:
    tag = f"kiln-counter:{version}"
    with tempfile.TemporaryDirectory(prefix="kiln-counter-") as tmp:
        subprocess.run(["sh", str(COUNTER_DIR / "render.sh"), version, tmp], check=True)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path in sorted(Path(tmp).rglob("*")):
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(tmp)))
                info.uid = info.gid = 0
                info.mtime = 0
                if info.isfile():
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
        image, _ = client.images.build(
            fileobj=io.BytesIO(buffer.getvalue()), custom_context=True, tag=tag, rm=True
        )
    return str(image.id)


@pytest.fixture(scope="module")
def counter_images(docker_client: docker.DockerClient) -> Iterator[None]:
    build_counter(docker_client, "v1")
    build_counter(docker_client, "v2")
    yield


def spec(version: str, *, strategy: str = "recreate") -> str:
    return f"""\
app: {APP}
image: kiln-counter:{version}
port: 8080
instances: 1
health:
  http: /healthz
  interval: 1s
  timeout: 500ms
routes:
  - host: {APP}.test
deploy:
  strategy: {strategy}
  deadline: 30s
  drain: 300ms
stop_grace: 2s
volumes:
  - name: data
    path: /var/lib/counter
"""


class Client:
    """Counts what the app acknowledged: every 200 to a POST is a promise."""

    def __init__(self, kiln: KilnHarness) -> None:
        self.url = f"http://127.0.0.1:{kiln.http_port}/cgi-bin/count"
        self.headers = {"Host": f"{APP}.test"}
        self.acknowledged = 0

    def add(self, times: int) -> None:
        for _ in range(times):
            answer = httpx.post(self.url, headers=self.headers, timeout=10)
            assert answer.status_code == 200, answer.text
            value = int(answer.text.split()[0])
            assert value == self.acknowledged + 1, (value, self.acknowledged)
            self.acknowledged = value

    def value(self) -> int:
        answer = httpx.get(self.url, headers=self.headers, timeout=10)
        assert answer.status_code == 200, answer.text
        return int(answer.text.split()[0])


def serving(kiln: KilnHarness, release: int) -> None:
    kiln.wait_ready(APP, 1, release=release, timeout=60)


def test_a_counter_on_a_volume_loses_nothing_acknowledged(
    kiln: KilnHarness, counter_images: None, tmp_path: Path
) -> None:
    refused = kiln.deploy(spec("v1", strategy="canary"))
    assert refused.returncode == 2 and "not shared" in refused.stderr, refused.stderr

    assert kiln.deploy(spec("v1"), "--wait").returncode == 0
    serving(kiln, 1)
    client = Client(kiln)
    client.add(10)

    # A new release: the old instance stops before the new one starts; the data stays.
    assert kiln.deploy(spec("v2"), "--wait").returncode == 0
    serving(kiln, 2)
    assert client.value() == 10
    client.add(5)

    # kill -9 of the instance: kiln replaces it, on the same volume.
    (container,) = [c for c in kiln.containers(APP) if c.status == "running"]
    kiln.docker.api.kill(container.id, signal="SIGKILL")
    wait_until(
        lambda: [c for c in kiln.containers(APP) if c.status == "running" and c.id != container.id],
        timeout=60,
        what="a replacement instance",
    )
    serving(kiln, 2)
    assert client.value() == 15
    client.add(3)

    # A kiln restart changes nothing that runs or is stored.
    kiln.stop()
    kiln.start()
    assert client.value() == 18

    # Snapshot while stopped (consistent), go on counting, then restore.
    assert kiln.cli("stop", APP).returncode == 0
    wait_until(
        lambda: not [c for c in kiln.containers(APP) if c.status == "running"],
        timeout=60,
        what="the app to stop",
    )
    taken = kiln.cli_json("volume", "snapshot", APP, "data")
    assert taken["consistency"] == "stopped" and taken["size"] > 0
    assert kiln.cli("scale", APP, "1").returncode == 0
    serving(kiln, 2)
    assert client.value() == 18
    client.add(4)
    assert client.value() == 22

    running = kiln.cli("volume", "restore", APP, "data", taken["id"])
    assert running.returncode == 7 and "kiln stop" in running.stderr  # never under a running app
    assert kiln.cli("stop", APP).returncode == 0
    wait_until(
        lambda: not [c for c in kiln.containers(APP) if c.status == "running"],
        timeout=60,
        what="the app to stop",
    )

    # A corrupted snapshot is refused and changes nothing.
    tar = kiln.home / "snapshots" / "dev" / APP / "data" / f"{taken['id']}.tar"
    original = tar.read_bytes()
    tar.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    corrupted = kiln.cli("volume", "restore", APP, "data", taken["id"])
    assert corrupted.returncode == 2 and "corrupted" in corrupted.stderr, corrupted.stderr
    tar.write_bytes(original)

    restored = kiln.cli("volume", "restore", APP, "data", taken["id"])
    assert restored.returncode == 0, restored.stderr
    assert kiln.cli("scale", APP, "1").returncode == 0
    serving(kiln, 2)
    assert client.value() == 18  # the snapshot's value, exactly

    volumes = kiln.cli_json("volume", "ls", APP)
    assert [(v["name"], v["used_by"]) for v in volumes] == [("data", [1, 2])] or [
        (v["name"], v["used_by"]) for v in volumes
    ] == [("data", [2])]
    in_use = kiln.cli("volume", "rm", APP, "data", "--yes")
    assert in_use.returncode == 7 and "used by release" in in_use.stderr
    inspected = kiln.cli_json("volume", "inspect", APP, "data")
    assert [s["id"] for s in inspected["snapshots"]] == [taken["id"]]
