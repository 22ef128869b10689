"""What starting one container costs the Docker engine itself while N others run: no kiln, no
NGINX, only a private dockerd and the demo image. bench/scale.py's rolling deploy with 99 apps
idle spends its extra time between the plan and ``instance.started``; this says how much of that
the engine adds on its own.

    .venv/bin/python -m bench.engine_starts                  # 0 and 300 others, host network
    .venv/bin/python -m bench.engine_starts --others 0,100,300 --network bridge

For each count: that many demo containers are started (like kiln's: an init, the demo app
serving), then ``--samples`` containers are created, started, inspected and listed one after
the other, and removed; the medians (ms) of each call. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import threading
import time
from typing import Any

import docker

from tests.harness.dockerd import PrivateDockerd
from tests.harness.images import build_hello_image

IMAGE = "kiln-hello:v1"
LABEL = "io.kiln.bench"


def _container(
    client: docker.DockerClient, name: str, port: int, args: argparse.Namespace, group: str
) -> dict[str, Any]:
    api = client.api
    host = args.network == "host"
    # kiln's hardening and limits (kiln/drivers/docker.py _create_kwargs) with --like-kiln
    hardened: dict[str, Any] = (
        {
            "read_only": True,
            "tmpfs": {"/tmp": ""},
            "security_opt": ["no-new-privileges"],
            "cap_drop": ["ALL"],
            "nano_cpus": 500_000_000,
            "mem_limit": 128 * 2**20,
            "memswap_limit": 128 * 2**20,
            "pids_limit": 256,
        }
        if args.like_kiln
        else {}
    )
    created: dict[str, Any] = api.create_container(
        IMAGE,
        name=name,
        labels={LABEL: group},
        environment={"PORT": str(port), **({"HOST": "127.0.0.1"} if host else {})},
        host_config=api.create_host_config(
            init=True,
            network_mode="host" if host else None,
            restart_policy={"Name": "no"},
            **hardened,
        ),
    )
    return created


def _medians(
    client: docker.DockerClient, args: argparse.Namespace, samples: int, round_: int
) -> Any:
    api = client.api
    times: dict[str, list[float]] = {"create": [], "start": [], "inspect": [], "list": []}
    names = []
    for n in range(samples):
        name = f"bench-sample-{round_}-{n}"
        names.append(name)
        began = time.perf_counter()
        created = _container(client, name, 21000 + n, args, f"sample{round_}")
        times["create"].append(time.perf_counter() - began)
        began = time.perf_counter()
        api.start(created["Id"])
        times["start"].append(time.perf_counter() - began)
        began = time.perf_counter()
        api.inspect_container(created["Id"])
        times["inspect"].append(time.perf_counter() - began)
        began = time.perf_counter()
        api.containers(all=True, filters={"label": f"{LABEL}=sample{round_}"})
        times["list"].append(time.perf_counter() - began)
    removes = []
    for name in names:
        began = time.perf_counter()
        api.remove_container(name, force=True)
        removes.append(time.perf_counter() - began)
    times["remove"] = removes
    return {call: round(1000 * statistics.median(values), 1) for call, values in times.items()}


def _follow(docker_host: str, container_id: str) -> None:
    """A daemon thread reading the container's log stream until the bench ends."""

    def read() -> None:
        own = docker.APIClient(base_url=docker_host)
        with contextlib.suppress(Exception):
            for _ in own.logs(container_id, stream=True, follow=True):
                pass

    threading.Thread(target=read, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--others", default="0,300", help="running containers, comma-separated")
    parser.add_argument("--network", choices=["host", "bridge"], default="host")
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument(
        "--like-kiln", action="store_true", help="kiln's hardening and limits on every container"
    )
    parser.add_argument(
        "--follow-logs",
        action="store_true",
        help="follow each running container's logs (as kiln's log keeper does)",
    )
    args = parser.parse_args()
    counts = sorted({int(c) for c in args.others.split(",") if c})
    # A /24 bridge holds 253 containers: a /22 for up to ~1,000.
    with PrivateDockerd(subnet_prefix=22) as engine:
        client = docker.DockerClient(base_url=engine.docker_host)
        try:
            build_hello_image(client, version="v1", variant="healthy", tag=IMAGE)
            _medians(client, args, 3, -1)  # warm the engine up (first starts are slower)
            result: dict[str, Any] = {"benchmark": "engine_starts", "network": args.network}
            running = 0
            for round_, count in enumerate(counts):
                while running < count:
                    created = _container(
                        client, f"bench-other-{running}", 30000 + running, args, "other"
                    )
                    client.api.start(created["Id"])
                    if args.follow_logs:
                        _follow(engine.docker_host, created["Id"])
                    running += 1
                time.sleep(2)  # the starts' tail settles
                result[f"with_{count}_running_ms"] = _medians(client, args, args.samples, round_)
            print(json.dumps(result))
        finally:
            for container in client.api.containers(all=True, filters={"label": LABEL}):
                client.api.remove_container(container["Id"], force=True)
            client.close()


if __name__ == "__main__":
    main()
