"""Checks that depend on the host a spec would run on: a pure function of the spec and the
host's capacity, which the controller asks the driver for.

A spec that asks one instance for more CPUs or memory than the host has can never start (or
is OOM-killed as soon as it tries to use them); it is refused when the release is created.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.spec.model import AppSpec


@dataclass(frozen=True, kw_only=True)
class HostLimits:
    """What one host can give one instance at most, as its container engine reports it."""

    cpus: float
    memory_bytes: int


def check_runnable(spec: AppSpec, host: HostLimits) -> list[str]:
    """Problems that make ``spec`` impossible to run on ``host``, each naming its field.

    Empty when it can run. Limits left out (``null``) ask for nothing and never clash.
    """
    problems: list[str] = []
    cpus = spec.resources.cpus
    if cpus is not None and cpus > host.cpus:
        problems.append(f"resources.cpus: {cpus:g} is more than this host's {host.cpus:g} CPUs")
    memory = spec.resources.memory
    if memory is not None and memory > host.memory_bytes:
        problems.append(
            f"resources.memory: {_size(memory)} is more than this host's"
            f" {_size(host.memory_bytes)} of memory"
        )
    return problems


def _size(n: int) -> str:
    for unit, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if n >= factor:
            return f"{n / factor:.4g}{unit}"
    return f"{n} bytes"
