"""kiln as a systemd service: ``kiln up --install-service`` on a machine whose PID 1 is systemd.

systemd then is the supervisor: ``Restart=always`` restarts an exited server, ``WatchdogSec``
kills and restarts one whose event loop stops sending WATCHDOG=1 (``kiln.supervisor.liveness``),
``Type=notify`` waits for READY=1. ``KillMode=process``: stopping or restarting the service
stops the server only; NGINX, which the server started, keeps serving (the data plane never
depends on the control plane).

``render_unit`` is pure (golden-tested); the rest writes the file and calls systemctl.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kiln.config import Settings

SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
RESTART_SECONDS = 1.0
START_TIMEOUT_SECONDS = 90
STOP_TIMEOUT_SECONDS = 45


def systemd_is_init() -> bool:
    """What sd_booted(3) checks: systemd runs as PID 1."""
    return Path("/run/systemd/system").is_dir()


def unit_name(settings: Settings) -> str:
    """One unit per home: ``kiln-<8 hex digits of the home's path>.service``."""
    digest = hashlib.sha256(str(settings.home.absolute()).encode()).hexdigest()[:8]
    return f"kiln-{digest}.service"


@dataclass(frozen=True)
class UnitPlace:
    path: Path
    user: bool  # a user unit (systemctl --user), for a kiln that does not run as root


def unit_place(
    settings: Settings, *, uid: int | None = None, home: Path | None = None
) -> UnitPlace:
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return UnitPlace(SYSTEM_UNIT_DIR / unit_name(settings), user=False)
    config = Path(os.environ.get("XDG_CONFIG_HOME") or (home or Path.home()) / ".config")
    return UnitPlace(config / "systemd" / "user" / unit_name(settings), user=True)


def _quoted(value: str) -> str:
    """A value for a unit file: double-quoted, C escapes, ``%`` doubled (specifiers)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def render_unit(settings: Settings, *, python: str, user: bool) -> str:
    """The unit file text for ``settings``' home, running the server with ``python``."""
    home = str(settings.home.absolute()).replace("%", "%%")
    environment = "\n".join(
        f"Environment={_quoted(f'{name}={value}')}"
        for name, value in sorted(settings.environment().items())
    )
    executable = _quoted(python).replace("$", "$$")
    return f"""\
# Written by `kiln up --install-service`; `kiln down` stops it, `kiln up` starts it.
# Stopping the server leaves NGINX and the apps serving (KillMode=process).
[Unit]
Description=kiln server (KILN_HOME={home})
After=network-online.target docker.service
Wants=network-online.target
# Never give up restarting: kiln keeps the apps healthy, it must come back.
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=main
ExecStart={executable} -m kiln.api.server
{environment}
UMask=0077
Restart=always
RestartSec={RESTART_SECONDS:g}s
WatchdogSec={settings.watchdog_seconds:g}s
TimeoutStartSec={START_TIMEOUT_SECONDS}s
TimeoutStopSec={STOP_TIMEOUT_SECONDS}s
KillMode=process

[Install]
WantedBy={"default.target" if user else "multi-user.target"}
"""


def installed(settings: Settings) -> UnitPlace | None:
    """This home's unit, if it is installed and systemd runs (else it cannot be used)."""
    if not systemd_is_init():
        return None
    place = unit_place(settings)
    return place if place.path.exists() else None


def systemctl(place: UnitPlace, *args: str) -> subprocess.CompletedProcess[str]:
    command = ["systemctl", *(["--user"] if place.user else []), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def is_active(place: UnitPlace) -> bool:
    return systemctl(place, "is-active", "--quiet", place.path.name).returncode == 0


def install(settings: Settings) -> UnitPlace:
    """Write the unit, reload systemd, enable and start it; raises ``RuntimeError`` with
    systemctl's words when a step fails."""
    place = unit_place(settings)
    text = render_unit(settings, python=sys.executable, user=place.user)
    place.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = place.path.with_name(f".{place.path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, place.path)
    for args in (("daemon-reload",), ("enable", "--now", place.path.name)):
        result = systemctl(place, *args)
        if result.returncode != 0:
            raise RuntimeError(
                f"systemctl {' '.join(args)} failed: {(result.stderr or result.stdout).strip()}"
            )
    return place
