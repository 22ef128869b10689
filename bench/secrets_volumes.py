"""Secrets and volumes benchmark, on a private dockerd through the DockerDriver.

Prints one JSON line:
  start_plain_ms / start_10_secrets_ms   median time of driver.start_instance (create + start +
                                         inspect) with no secret / with 10 file secrets
  secrets_extra_ms                       the difference (target: < 50 ms)
  snapshot_mb_s / restore_mb_s           throughput of export_volume / import_volume for a volume
                                         holding --volume-mb MB (default 500) of random data

    python -m bench.secrets_volumes [--starts 10] [--volume-mb 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import docker

from kiln.drivers.docker import DockerDriver
from kiln.model import AppKey, InstanceSpec, SecretRef, VolumeMount
from tests.harness.dockerd import PrivateDockerd
from tests.harness.images import build_hello_image

KEY = AppKey("bench", "secrets")


def spec(image: str, n: int, *, secrets: int = 0, volume: bool = False) -> InstanceSpec:
    return InstanceSpec(
        id=f"r1-b{n:05d}",
        key=KEY,
        release=1,
        name=f"bench-secrets-r1-b{n:05d}",
        image=image,
        command=None,
        env={},
        port=8080,
        labels={},
        stop_grace=1.0,
        secrets=tuple(SecretRef(f"S{i}", 1) for i in range(secrets)),
        volumes=(VolumeMount("data", "/data"),) if volume else (),
    )


async def starts(driver: DockerDriver, image: str, count: int, secrets: int, base: int) -> float:
    values = {f"S{i}": f"secret-value-{i}-{uuid.uuid4().hex}".encode() for i in range(secrets)}
    times = []
    for n in range(count):
        one = spec(image, base + n, secrets=secrets)
        began = time.perf_counter()
        instance = await driver.start_instance(one, secrets=values)
        times.append(time.perf_counter() - began)
        await driver.remove_instance(instance.container_id)
    return statistics.median(times) * 1000


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    with PrivateDockerd() as dockerd:
        client = docker.DockerClient(base_url=dockerd.docker_host, version="1.41")
        image = build_hello_image(client, version="v1", tag="kiln-hello:bench")
        driver = DockerDriver(base_url=dockerd.docker_host, installation_id=uuid.uuid4().hex)
        try:
            await starts(driver, image, 2, 0, 90000)  # warm the engine up
            plain, with_secrets = [], []
            for round_ in range(3):  # interleaved: the machine's load drifts
                plain.append(await starts(driver, image, args.starts, 0, round_ * 1000))
                with_secrets.append(
                    await starts(driver, image, args.starts, 10, round_ * 1000 + 500)
                )
            # A volume with random data, filled by a container (the data never crosses the API).
            filler = spec(image, 99999, volume=True)
            instance = await driver.start_instance(filler)
            mb = args.volume_mb
            code = await driver.exec(
                instance.container_id,
                [
                    "/bin/busybox",
                    "sh",
                    "-c",
                    f"/bin/busybox dd if=/dev/urandom of=/data/blob bs=1M count={mb} 2>/dev/null",
                ],
                timeout=600,
            )
            assert code == 0
            await driver.remove_instance(instance.container_id)
            with tempfile.TemporaryDirectory(prefix="kiln-bench-snap-") as tmp:
                tar = Path(tmp) / "snap.tar"
                began = time.perf_counter()
                size, _ = await driver.export_volume(
                    KEY, "data", image=image, into=tar, progress=lambda _n: None
                )
                snapshot_s = time.perf_counter() - began
                began = time.perf_counter()
                await driver.import_volume(
                    KEY, "data", image=image, source=tar, progress=lambda _n: None
                )
                restore_s = time.perf_counter() - began
            await driver.remove_volume(KEY, "data")
        finally:
            await driver.close()
            client.close()
    return {
        "bench": "secrets_volumes",
        "start_plain_ms": round(statistics.median(plain), 1),
        "start_10_secrets_ms": round(statistics.median(with_secrets), 1),
        "secrets_extra_ms": round(statistics.median(with_secrets) - statistics.median(plain), 1),
        "starts_per_case": args.starts * 3,
        "volume_bytes": size,
        "snapshot_mb_s": round(size / 1e6 / snapshot_s, 1),
        "restore_mb_s": round(size / 1e6 / restore_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--volume-mb", type=int, default=500)
    print(json.dumps(asyncio.run(main_async(parser.parse_args()))))


if __name__ == "__main__":
    main()
