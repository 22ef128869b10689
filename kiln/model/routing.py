"""What the router serves: routes (config, change by reload) and peers (data, change live)."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.model.app import AppKey


@dataclass(frozen=True, order=True)
class RouteEntry:
    """One host + path prefix → one app's upstream. ``host`` None matches any host."""

    host: str | None
    path: str
    key: AppKey


@dataclass(frozen=True, order=True)
class Peer:
    """One instance in an app's upstream. The router picks peers in proportion to ``weight``."""

    instance_id: str
    host: str
    port: int
    weight: int = 1
