"""Health: probes of one instance (http, tcp, command) and the monitor that runs them."""

from kiln.health.monitor import HealthMonitor
from kiln.health.probes import ExecFn, ProbeResult, run_probe

__all__ = ["ExecFn", "HealthMonitor", "ProbeResult", "run_probe"]
