"""What the router serves: routes (config, change by reload) and peers (data, change live).

Peers carry their release, and an app's ``TrafficPolicy`` says how requests are split between
releases (exact shares, a canary testers can force, a preview reachable before it takes
traffic). Peers and policy change live through the balancer; only a route change reloads NGINX.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.model.app import AppKey


@dataclass(frozen=True, order=True)
class RouteEntry:
    """One host + path prefix → one app's upstream. ``host`` None matches any host.

    ``preview``: the route reaches only the app's preview release (a blue-green's green before
    promotion), like a request with ``X-Kiln-Preview: 1`` on the app's other routes.
    """

    host: str | None
    path: str
    key: AppKey
    preview: bool = False


@dataclass(frozen=True, order=True)
class Peer:
    """One instance in an app's upstream.

    Within one release the router picks peers in proportion to ``weight``; between releases it
    follows the app's ``TrafficPolicy``. ``release`` 0 means "not known" (a peer list written
    before peers carried their release).
    """

    instance_id: str
    host: str
    port: int
    weight: int = 1
    release: int = 0


@dataclass(frozen=True, kw_only=True)
class TrafficPolicy:
    """How the balancer splits one app's requests between its releases.

    ``shares``: (release, percent) pairs summing to 100, the exact share of requests each
    release gets (the balancer picks the release by share, then a peer within it). Empty: every
    peer of the app is one pool, picked by peer weight (a rolling update).
    ``canary``: the release a request with ``X-Kiln-Canary: always`` goes to (``never``: any
    other release); a client that got the canary once keeps it through the ``kiln_canary``
    cookie while this is set.
    ``preview``: the release a request with ``X-Kiln-Preview: 1`` (or to a preview route) goes
    to, whatever its share (a blue-green's green before promotion).
    """

    shares: tuple[tuple[int, int], ...] = ()
    canary: int | None = None
    preview: int | None = None

    def __post_init__(self) -> None:
        if self.shares:
            total = sum(share for _, share in self.shares)
            if total != 100 or any(share < 0 for _, share in self.shares):
                raise ValueError(f"release shares must be ≥ 0 and sum to 100, got {self.shares}")


@dataclass(frozen=True, kw_only=True)
class ReleaseTraffic:
    """Cumulative request counters of one release of one app, as the router counted them.

    Counters only grow (until NGINX restarts: then they start again from 0, and a reader that
    sees one go down treats the sample as a new start). ``latency_buckets`` are cumulative
    Prometheus-style buckets: (upper bound in ms, requests at or under it), ascending.
    """

    requests: int
    errors: int  # answers with a 5xx status (including NGINX's own 502/504 for this release)
    latency_buckets: tuple[tuple[float, int], ...] = ()
