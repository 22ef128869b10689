"""The route table NGINX serves, from the target releases of every app. Pure."""

from __future__ import annotations

from collections.abc import Iterable

from kiln.errors import Conflict
from kiln.model import Release, RouteEntry


def route_table(releases: Iterable[Release]) -> list[RouteEntry]:
    """One entry per (host, path) of each app's current release; a clash is a ``Conflict``."""
    owners: dict[tuple[str | None, str], RouteEntry] = {}
    for release in releases:
        for route in release.spec.effective_routes():
            entry = RouteEntry(host=route.host, path=route.path, key=release.key)
            clash = owners.get((route.host, route.path))
            if clash is not None and clash.key != release.key:
                raise Conflict(
                    f"route {route.host or '*'}{route.path} is already served by {clash.key}; "
                    "give one of the apps another host or path"
                )
            owners[(route.host, route.path)] = entry
    return sorted(owners.values(), key=lambda e: (e.host or "", e.path, str(e.key)))
