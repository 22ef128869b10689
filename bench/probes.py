"""What health checks of many instances cost kiln: a ``HealthMonitor`` probing N instances
(http, the spec's default 2 s interval) that answer from a separate process, so only the
probing side is counted. Prints kiln's CPU (percent of one core), probes per second and
the CPU time of one probe.

    .venv/bin/python -m bench.probes                    # 300 instances, 10 s
    .venv/bin/python -m bench.probes --instances 30 --seconds 5
    .venv/bin/python -m bench.probes --interval 1       # the demo app's interval
    .venv/bin/python -m bench.probes --kind tcp         # tcp probes (connect, close)
    .venv/bin/python -m bench.probes --loop asyncio     # the standard library's loop (default uvloop,
                                                        # as the server runs: KILN_EVENT_LOOP)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime

import uvloop

from kiln.health.monitor import HealthMonitor
from kiln.spec import Probe

# The instances: one asyncio server per port in a child process, answering 200 at once.
_SERVER = """
import asyncio, sys
async def answer(reader, writer):
    try:
        await reader.readuntil(b"\\r\\n\\r\\n")
        writer.write(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\nconnection: close\\r\\n\\r\\nok")
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass  # the prober went away (the bench ends)
    writer.close()
async def main(count):
    servers = [await asyncio.start_server(answer, "127.0.0.1", 0) for _ in range(count)]
    print(" ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    await asyncio.Event().wait()
asyncio.run(main(int(sys.argv[1])))
"""


async def _run(
    instances: int, seconds: float, interval: float, kind: str, ports: list[int]
) -> dict[str, float]:
    monitor = HealthMonitor(on_change=lambda _id: None)
    timeout = min(1.0, interval)
    if kind == "tcp":
        probe = Probe(tcp=True, interval=interval, timeout=timeout)
    else:
        probe = Probe(http="/healthz", interval=interval, timeout=timeout)
    for n in range(instances):
        monitor.track(
            f"r1-{n}",
            readiness=probe,
            liveness=probe,
            host="127.0.0.1",
            port=ports[n % len(ports)],
            started_at=datetime.now(UTC),
        )
    try:
        deadline = time.monotonic() + 30
        while not all(monitor.status(f"r1-{n}").ready for n in range(instances)):
            if time.monotonic() > deadline:
                raise TimeoutError("the instances did not turn ready")
            await asyncio.sleep(0.05)
        before = sum(sum(monitor.check_counts(f"r1-{n}")) for n in range(instances))
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        probes = sum(sum(monitor.check_counts(f"r1-{n}")) for n in range(instances)) - before
    finally:
        await monitor.close()
    return {
        "instances": instances,
        "probes_per_s": round(probes / wall, 1),
        "cpu_percent_of_a_core": round(100 * cpu / wall, 1),
        "cpu_ms_per_probe": round(1000 * cpu / max(probes, 1), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=2.0, help="the probe's interval (s)")
    parser.add_argument("--kind", choices=["http", "tcp"], default="http")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()
    servers = min(args.instances, 100)
    with subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(servers)], stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            ports = [int(p) for p in child.stdout.readline().split()]
            factory = None if args.loop == "asyncio" else uvloop.new_event_loop
            with asyncio.Runner(loop_factory=factory) as runner:
                result = runner.run(
                    _run(args.instances, args.seconds, args.interval, args.kind, ports)
                )
            print(
                json.dumps(
                    {"loop": args.loop, "kind": args.kind, "interval": args.interval, **result}
                )
            )
        finally:
            child.terminate()


if __name__ == "__main__":
    main()
