"""The router seam: NGINX's routes (rendered config, reloaded; or only checked, no reload) and
peers (pushed live, no reload).

Implementations: ``kiln.router.nginx.NginxRouter`` and ``kiln.router.fake.FakeRouter``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from kiln.model import AppKey, Peer, ReleaseTraffic, RouteEntry, TrafficPolicy


class Router(Protocol):
    async def start(self) -> None:
        """Make sure NGINX runs: adopt a running one (pid file) or start it with the last good config.

        Idempotent; the controller calls it at start and whenever ``is_running()`` is false.
        """

    async def is_running(self) -> bool: ...

    async def wait_exited(self) -> None:
        """Return as soon as NGINX's master exits (at once if it does not run), so a supervisor
        can ``start()`` it again within a fraction of a second rather than a poll interval."""

    async def apply_routes(self, routes: Sequence[RouteEntry]) -> bool:
        """Render the config for these routes, check it with ``nginx -t``, swap it in, reload.

        Returns False when the config did not change (no reload). Raises ``RouterConfigRejected``
        and keeps the last good config when the check fails.
        """

    async def check_routes(self, routes: Sequence[RouteEntry]) -> str | None:
        """Whether NGINX would take the config for these routes, without applying it: render,
        ``nginx -t``, nothing swapped, nothing reloaded (so no client connection is cut).

        None when it would; else why not: the renderer's reason (the same host and path twice,
        say) or NGINX's own words. The live config and the last good state stay as they are.
        Raises ``RouterUnavailable`` when the check cannot run at all.
        """

    async def set_peers(
        self, key: AppKey, peers: Sequence[Peer], policy: TrafficPolicy | None = None
    ) -> None:
        """Replace the peers of the app's upstream and how traffic is split between its releases,
        without a reload (``None``: one pool, by peer weight). Persisted first, so a restarted
        NGINX serves the same list. An empty list makes the app answer 503."""

    async def forget_peers(self, key: AppKey) -> None:
        """Drop the app's peer list altogether (a destroyed app), from NGINX and its file."""

    async def get_peers(self) -> dict[AppKey, list[Peer]]:
        """The peer lists NGINX currently holds."""

    async def in_flight(self) -> dict[AppKey, dict[str, int]]:
        """Requests each instance is serving right now, per app (instances with none may be
        missing). An instance that left the peer list is stopped once this reaches 0."""

    async def traffic(self) -> dict[AppKey, dict[int, ReleaseTraffic]]:
        """Cumulative request counters per app and release, for analysis and metrics."""

    def log_files(self) -> dict[str, Path]:
        """NGINX's log files by name (``access``: JSON lines, ``error``); empty for a router
        that keeps none."""

    async def reopen_logs(self) -> None:
        """Make NGINX close and reopen its log files (after they were rotated): no reload."""

    async def stop(self) -> None:
        """Stop NGINX (tests and uninstall only: ``kiln down`` leaves NGINX serving)."""

    async def close(self) -> None:
        """Release kiln's own connections to NGINX (NGINX keeps serving); kiln calls it when
        it shuts down. A later call opens them again."""
