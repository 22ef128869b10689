"""The systemd unit for ``kiln up --install-service``, rendered as a pure function.

systemd is not PID 1 on the machines these tests run on, so the unit is checked as text: the
golden file is reviewed by a person once, and any change to it shows in review.
"""

from __future__ import annotations

from pathlib import Path

from kiln.config import Settings
from kiln.supervisor.systemd import render_unit, unit_name, unit_place

GOLDEN = Path(__file__).with_name("golden") / "kiln.service"

SETTINGS = Settings(
    home=Path("/var/lib/kiln"),
    http_host="0.0.0.0",
    http_port=80,
    docker_host="unix:///run/docker.sock",
)


def test_unit_matches_the_golden_file() -> None:
    text = render_unit(SETTINGS, python="/opt/kiln/venv/bin/python", user=False)
    assert text == GOLDEN.read_text()


def test_unit_runs_the_server_under_systemds_watch_and_leaves_nginx_running() -> None:
    lines = render_unit(SETTINGS, python="/usr/bin/python3", user=False).splitlines()
    for line in (
        "Type=notify",
        "Restart=always",
        "WatchdogSec=10s",
        "KillMode=process",
        "UMask=0077",
        'ExecStart="/usr/bin/python3" -m kiln.api.server',
        'Environment="KILN_HOME=/var/lib/kiln"',
        "WantedBy=multi-user.target",
    ):
        assert line in lines


def test_paths_with_spaces_quotes_and_specifier_characters_are_escaped() -> None:
    odd = Settings(home=Path('/srv/my "kiln" 100%'), watchdog_seconds=20)
    text = render_unit(odd, python="/opt/$venv/bin/python", user=True)
    assert 'Environment="KILN_HOME=/srv/my \\"kiln\\" 100%%"' in text
    assert 'ExecStart="/opt/$$venv/bin/python" -m kiln.api.server' in text
    assert 'Description=kiln server (KILN_HOME=/srv/my "kiln" 100%%)' in text
    assert "WatchdogSec=20s" in text
    assert "WantedBy=default.target" in text


def test_each_home_gets_its_own_unit_system_wide_for_root_else_per_user() -> None:
    other = Settings(home=Path("/var/lib/kiln-b"))
    assert unit_name(SETTINGS) != unit_name(other)
    assert unit_name(SETTINGS) == unit_name(Settings(home=Path("/var/lib/kiln")))
    assert unit_name(SETTINGS).startswith("kiln-") and unit_name(SETTINGS).endswith(".service")
    root = unit_place(SETTINGS, uid=0)
    assert root.path == Path("/etc/systemd/system") / unit_name(SETTINGS) and not root.user
    user = unit_place(SETTINGS, uid=1000, home=Path("/home/ann"))
    assert user.user
    assert user.path.parent.parts[-2:] == ("systemd", "user")
