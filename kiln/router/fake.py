"""``FakeRouter``: the ``Router`` protocol in memory, for tests of the controller above it.

It validates routes with the real renderer (same ``InvalidInput`` for a duplicate host + path),
counts reloads, and can be told to be down or to reject the next config.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kiln.errors import RouterConfigRejected, RouterUnavailable
from kiln.model import AppKey, Peer, RouteEntry
from kiln.router.render import render_nginx_conf

_FAKE_DIR = Path("/kiln-fake-router")


class FakeRouter:
    """Records what the controller asked for.

    ``routes`` / ``peers`` are what NGINX would serve; ``reloads`` counts config changes;
    ``peer_pushes`` lists every ``set_peers`` call in order. Set ``available = False`` to
    make every call (but ``start`` and ``is_running``) raise ``RouterUnavailable``, and
    ``reject_next_config`` to make the next changing ``apply_routes`` raise
    ``RouterConfigRejected``.
    """

    def __init__(self, *, running: bool = False) -> None:
        self.running = running
        self.available = True
        self.reject_next_config: str | None = None
        self.routes: tuple[RouteEntry, ...] = ()
        self.peers: dict[AppKey, list[Peer]] = {}
        self.reloads = 0
        self.starts = 0
        self.peer_pushes: list[tuple[AppKey, tuple[Peer, ...]]] = []

    async def start(self) -> None:
        if not self.available:
            raise RouterUnavailable("the fake router is down")
        if not self.running:
            self.running = True
            self.starts += 1

    async def is_running(self) -> bool:
        return self.running and self.available

    async def apply_routes(self, routes: Sequence[RouteEntry]) -> bool:
        self._check_up()
        _render(routes)  # the real validation: InvalidInput for what NGINX cannot serve
        new = tuple(sorted(set(routes)))
        if new == self.routes:
            return False
        if self.reject_next_config is not None:
            message, self.reject_next_config = self.reject_next_config, None
            raise RouterConfigRejected(message)
        self.routes = new
        self.reloads += 1
        return True

    async def set_peers(self, key: AppKey, peers: Sequence[Peer]) -> None:
        self._check_up()
        self.peers[key] = list(peers)
        self.peer_pushes.append((key, tuple(peers)))

    async def forget_peers(self, key: AppKey) -> None:
        self._check_up()
        self.peers.pop(key, None)

    async def get_peers(self) -> dict[AppKey, list[Peer]]:
        self._check_up()
        return {key: list(peers) for key, peers in self.peers.items()}

    async def stop(self) -> None:
        self.running = False

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
