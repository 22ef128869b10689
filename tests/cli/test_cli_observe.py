"""kiln top, kiln logs filters and kiln events filters, against the fake service."""

from __future__ import annotations

from pathlib import Path

from .conftest import Kiln

EXPOSITION = b"""# HELP kiln_instance_ready 1 when ready.
# TYPE kiln_instance_ready gauge
kiln_instance_ready{app="web",env="dev",instance="r2-abc123",release="2"} 1.0
# HELP kiln_instance_memory_bytes Memory.
# TYPE kiln_instance_memory_bytes gauge
kiln_instance_memory_bytes{app="web",env="dev",instance="r2-abc123",release="2"} 4194304.0
# HELP kiln_app_requests Requests.
# TYPE kiln_app_requests counter
kiln_app_requests_total{app="web",env="dev",release="2"} 1234.0
# HELP kiln_host_cpus CPUs.
# TYPE kiln_host_cpus gauge
kiln_host_cpus 2.0
"""


def test_top_once_shows_releases_instances_and_memory(kiln: Kiln) -> None:
    kiln.service.metrics_text = EXPOSITION
    result = kiln.run("top", "--once", "--interval", "0.5")
    assert result.exit_code == 0, result.output
    assert "dev/web" in result.stdout
    assert "r2-abc123" in result.stdout
    assert "4.0 MiB" in result.stdout
    assert "1234" in result.stdout


def test_logs_pass_release_since_grep_and_router_to_the_server(kiln: Kiln, spec_file: Path) -> None:
    assert kiln.run("deploy", "-f", str(spec_file)).exit_code == 0
    result = kiln.run(
        "logs", "web", "--release", "1", "--since", "10m", "--grep", "ERR", "--router"
    )
    assert result.exit_code == 0, result.output
    request = kiln.service.log_requests[-1]
    assert request is not None
    assert (request.release, request.grep, request.router) == (1, "ERR", True)
    assert request.since is not None
    bad = kiln.run("logs", "web", "--since", "soon")
    assert bad.exit_code == 2
    assert "since" in bad.output
