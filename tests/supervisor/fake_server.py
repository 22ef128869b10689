"""A stand-in for ``python -m kiln.api.server`` that the supervisor cannot tell apart: it locks
the server pid file and beats the heartbeat, then follows one step of a plan per start.

    FAKE_PLAN="exit:3,serve"   first start: serve, then exit 3; later starts: serve until SIGTERM
    steps: serve · exit:N (after one "serving" beat) · refuse:N (no beat) · hang (beats, then
    stops beating, as a stuck event loop does)
Every start appends its pid to KILN_HOME/starts.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from kiln.config import Settings
from kiln.supervisor.liveness import SERVING, Heartbeat
from kiln.supervisor.pidfile import AlreadyHeld, PidFile

BEAT = 0.05


def main() -> int:
    settings = Settings.from_env()
    settings.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    starts = settings.home / "starts"
    with starts.open("a") as log:
        log.write(f"{os.getpid()}\n")
    plan = os.environ.get("FAKE_PLAN", "serve").split(",")
    count = len(starts.read_text().split())
    step = plan[min(count, len(plan)) - 1]
    kind, _, arg = step.partition(":")
    if kind == "refuse":
        return int(arg)
    pid_file = PidFile(settings.server_pid_path)
    try:
        pid_file.acquire()
    except AlreadyHeld:
        return 7
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    heartbeat = Heartbeat(settings.heartbeat_path)
    heartbeat.beat(SERVING)
    if kind == "exit":
        return int(arg)
    beats = 0
    while not stop:
        if kind != "hang" or beats < 3:
            heartbeat.beat()
            beats += 1
        time.sleep(BEAT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
