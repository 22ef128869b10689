"""The route table: every app's routes, recomputed from desired state and applied to the
router as one table (level-based, invariant 8). A clash between two apps is a ``Conflict``."""

from __future__ import annotations

from kiln.controller.runtime import ControlPlane
from kiln.errors import RouterConfigRejected
from kiln.model import AppKey, Release, RouteEntry, Severity
from kiln.planning import route_table


def current_route_table(
    plane: ControlPlane, *, with_release: Release | None = None
) -> list[RouteEntry]:
    """Every app's current routes (``with_release`` standing in for its app's); a clash
    between two apps raises ``Conflict``."""
    releases: dict[AppKey, Release] = {}
    for app in plane.store.list_apps():
        number = app.target_release or app.stable_release
        if number is not None:
            releases[app.key] = plane.store.get_release(app.key, number)
    if with_release is not None:
        releases[with_release.key] = with_release
    return route_table(releases.values())


async def apply_routes(plane: ControlPlane) -> None:
    """Apply the current table; a rejected config is recorded as an event and re-raised
    (NGINX keeps serving the last good one)."""
    async with plane.routes_lock:
        try:
            await plane.router.apply_routes(current_route_table(plane))
        except RouterConfigRejected as exc:
            plane.events.record(
                None, "router.config_rejected", exc.message, severity=Severity.ERROR
            )
            raise
