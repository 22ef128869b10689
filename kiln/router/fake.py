"""``FakeRouter``: the ``Router`` protocol in memory, for tests of the controller above it.

It validates routes with the real renderer (same ``InvalidInput`` for a duplicate host + path),
counts reloads and checks, and can be told to be down, to refuse configs or the next apply, or
to crash (NGINX's master exiting: ``wait_exited`` returns). In-flight counts and traffic counters are whatever the
test sets; ``choose_release`` answers which release a request would reach, by the same rules
as the NGINX balancer.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path

from kiln.errors import InvalidInput, RouterConfigRejected, RouterUnavailable
from kiln.model import AppKey, Peer, ReleaseTraffic, RouteEntry, TrafficPolicy
from kiln.router.render import render_nginx_conf

_FAKE_DIR = Path("/kiln-fake-router")

LATENCY_BOUNDS_MS: tuple[float, ...] = (
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    math.inf,
)
"""The latency buckets NGINX counts in (kiln_stats.lua), the last one +Inf."""


class FakeRouter:
    """Records what the controller asked for.

    ``routes`` / ``peers`` / ``policies`` are what NGINX would serve; ``reloads`` counts config
    changes; ``peer_pushes`` lists every ``set_peers`` call in order (``policy_pushes`` its
    policies). Set ``available = False`` to make every call (but ``start``, ``is_running``,
    ``wait_exited`` and ``close``) raise ``RouterUnavailable``, and ``reject_next_config`` to
    make the next changing ``apply_routes`` raise ``RouterConfigRejected`` (``refused_hosts``:
    every config with a route to one of these hosts, with that message, as NGINX refuses a
    config for what one app's routes say). ``applies`` counts the changing ``apply_routes``
    calls, refused ones too (each is a render, ``nginx -t`` and maybe a reload for NGINX); while
    ``hold_applies`` is cleared, each of them waits for it, so a test can pile callers up
    behind an apply under way. ``check_routes`` answers by the renderer and ``refused_hosts``
    (``reject_next_config`` stands for a one-off refusal of an apply, a reload NGINX refuses,
    and is left to the next apply); ``checks`` counts the checks that would run ``nginx -t``
    (the table is not the one served), which change nothing. ``crash()`` stops
    the fake NGINX as a kill would (peers, policies and routes are kept, as the real files are).
    ``in_flight_counts`` and ``traffic_counters`` are returned by ``in_flight()`` and
    ``traffic()``; set them, or use ``add_traffic``.
    """

    def __init__(self, *, running: bool = False) -> None:
        self.running = running
        self.available = True
        self.reject_next_config: str | None = None
        self.refused_hosts: dict[str, str] = {}
        self.hold_applies = asyncio.Event()
        self.hold_applies.set()
        self.applies = 0
        self.checks = 0
        self.routes: tuple[RouteEntry, ...] = ()
        self.peers: dict[AppKey, list[Peer]] = {}
        self.policies: dict[AppKey, TrafficPolicy | None] = {}
        self.reloads = 0
        self.starts = 0
        self.closed = False
        self.peer_pushes: list[tuple[AppKey, tuple[Peer, ...]]] = []
        self.policy_pushes: list[tuple[AppKey, TrafficPolicy | None]] = []
        self.in_flight_counts: dict[AppKey, dict[str, int]] = {}
        self.traffic_counters: dict[AppKey, dict[int, ReleaseTraffic]] = {}
        self.reopened = 0  # reopen_logs() calls
        self._exited: asyncio.Event | None = None
        self._round_robin: dict[tuple[AppKey, int], int] = {}

    async def start(self) -> None:
        if not self.available:
            raise RouterUnavailable("the fake router is down")
        if not self.running:
            self.running = True
            self.starts += 1
            self._exited = None

    async def is_running(self) -> bool:
        return self.running and self.available

    async def wait_exited(self) -> None:
        if not self.running:
            return
        if self._exited is None:
            self._exited = asyncio.Event()
        await self._exited.wait()

    def crash(self) -> None:
        """NGINX's master dies: ``wait_exited`` returns, counters start again from 0."""
        self.running = False
        self.in_flight_counts = {}
        self.traffic_counters = {}
        if self._exited is not None:
            self._exited.set()

    async def apply_routes(self, routes: Sequence[RouteEntry]) -> bool:
        self._check_up()
        _render(routes)  # the real validation: InvalidInput for what NGINX cannot serve
        new = tuple(sorted(set(routes)))
        if new == self.routes:
            return False
        self.applies += 1
        await self.hold_applies.wait()
        if self.reject_next_config is not None:
            message, self.reject_next_config = self.reject_next_config, None
            raise RouterConfigRejected(message)
        refusal = self._refusal(new)
        if refusal is not None:
            raise RouterConfigRejected(refusal)
        self.routes = new
        self.reloads += 1
        return True

    async def check_routes(self, routes: Sequence[RouteEntry]) -> str | None:
        if not self.available:  # `nginx -t` needs no running master, only NGINX itself
            raise RouterUnavailable("the fake router is down")
        try:
            _render(routes)
        except InvalidInput as exc:
            return exc.message
        new = tuple(sorted(set(routes)))
        if new == self.routes:
            return None
        self.checks += 1
        return self._refusal(new)

    def _refusal(self, routes: Sequence[RouteEntry]) -> str | None:
        """What NGINX says of a config with these routes (``refused_hosts``), None: fine."""
        for route in routes:
            if route.host is not None and route.host in self.refused_hosts:
                return self.refused_hosts[route.host]
        return None

    async def set_peers(
        self, key: AppKey, peers: Sequence[Peer], policy: TrafficPolicy | None = None
    ) -> None:
        self._check_up()
        if len({p.instance_id for p in peers}) != len(peers):
            raise InvalidInput(f"NGINX refused the peers of {key}: an instance id appears twice")
        self.peers[key] = list(peers)
        self.policies[key] = policy
        self.peer_pushes.append((key, tuple(peers)))
        self.policy_pushes.append((key, policy))

    async def forget_peers(self, key: AppKey) -> None:
        self._check_up()
        self.peers.pop(key, None)
        self.policies.pop(key, None)
        self.traffic_counters.pop(key, None)

    async def get_peers(self) -> dict[AppKey, list[Peer]]:
        self._check_up()
        return {key: list(peers) for key, peers in self.peers.items()}

    async def in_flight(self) -> dict[AppKey, dict[str, int]]:
        self._check_up()
        return {
            key: {instance: n for instance, n in counts.items() if n > 0}
            for key, counts in self.in_flight_counts.items()
        }

    async def traffic(self) -> dict[AppKey, dict[int, ReleaseTraffic]]:
        self._check_up()
        return {key: dict(by_release) for key, by_release in self.traffic_counters.items()}

    def add_traffic(
        self, key: AppKey, release: int, *, requests: int, errors: int = 0, latency_ms: float = 1.0
    ) -> None:
        """Count ``requests`` more answers of ``release`` (``errors`` of them 5xx), each taking
        ``latency_ms``, into ``traffic_counters`` the way NGINX would."""
        old = self.traffic_counters.get(key, {}).get(release)
        buckets = old.latency_buckets if old else tuple((b, 0) for b in LATENCY_BOUNDS_MS)
        self.traffic_counters.setdefault(key, {})[release] = ReleaseTraffic(
            requests=(old.requests if old else 0) + requests,
            errors=(old.errors if old else 0) + errors,
            latency_buckets=tuple(
                (bound, n + (requests if latency_ms <= bound else 0)) for bound, n in buckets
            ),
        )

    def choose_release(
        self,
        key: AppKey,
        *,
        preview_route: bool = False,
        headers: dict[str, str] | None = None,
        canary_cookie: str | None = None,
    ) -> int | None:
        """The release a request would reach (None: NGINX answers 503), by the balancer's rules:
        a preview route or ``X-Kiln-Preview: 1`` → the preview release; ``X-Kiln-Canary:
        always`` → the canary, ``never`` → the others; a ``kiln_canary`` cookie naming the
        current canary (``ENV.APP.RELEASE``) → the canary while it has ready peers; else by
        share (smooth weighted round robin, deterministic), or by peer weight without shares.
        """
        peers = [p for p in self.peers.get(key, []) if p.weight > 0]
        policy = self.policies.get(key) or TrafficPolicy()
        ready = {p.release for p in peers}
        asked = {name.lower(): value for name, value in (headers or {}).items()}

        def forced(release: int | None) -> int | None:
            return release if release is not None and release in ready else None

        if preview_route or asked.get("x-kiln-preview") == "1":
            return forced(policy.preview)
        canary = policy.canary
        if asked.get("x-kiln-canary") == "always":
            return forced(canary)
        exclude = canary if asked.get("x-kiln-canary") == "never" else None
        cookie = f"{key.environment}.{key.app}.{canary}"
        if exclude is None and canary in ready and canary_cookie == cookie:
            return canary
        if not policy.shares:
            # One pool by peer weight: a release's chance is the sum of its peers' weights.
            pool: dict[int, int] = {}
            for p in peers:
                if p.release != exclude:
                    pool[p.release] = pool.get(p.release, 0) + p.weight
            return self._next(key, sorted(pool.items())) if pool else None
        shared = [(r, s) for r, s in policy.shares if s > 0 and r in ready and r != exclude]
        return self._next(key, shared) if shared else None

    def _next(self, key: AppKey, weighted: list[tuple[int, int]]) -> int:
        """Smooth weighted round robin over (release, weight), like the balancer's."""
        total = sum(weight for _, weight in weighted)
        best: int | None = None
        for release, weight in weighted:
            state = (key, release)
            self._round_robin[state] = self._round_robin.get(state, 0) + weight
            if best is None or self._round_robin[state] > self._round_robin[(key, best)]:
                best = release
        assert best is not None
        self._round_robin[(key, best)] -= total
        return best

    def log_files(self) -> dict[str, Path]:
        return {}

    async def reopen_logs(self) -> None:
        self.reopened += 1

    async def stop(self) -> None:
        self.running = False
        if self._exited is not None:
            self._exited.set()

    async def close(self) -> None:
        self.closed = True

    def _check_up(self) -> None:
        if not self.available:
            raise RouterUnavailable("the fake router is down")
        if not self.running:
            raise RouterUnavailable("the fake router is not started")


def _render(routes: Sequence[RouteEntry]) -> str:
    return render_nginx_conf(
        routes,
        prefix=_FAKE_DIR,
        listen_host="127.0.0.1",
        listen_port=8080,
        admin_socket=_FAKE_DIR / "admin.sock",
        peers_file=_FAKE_DIR / "peers.json",
        lua_dir=_FAKE_DIR / "lua",
    )
