"""FakeRouter behaves like the real one where the controller can tell the difference."""

from __future__ import annotations

import pytest

from kiln.errors import InvalidInput, RouterConfigRejected, RouterUnavailable
from kiln.model import AppKey, Peer, RouteEntry
from kiln.router import FakeRouter, Router

WEB = AppKey("dev", "web")
API = AppKey("dev", "api")


async def test_fake_counts_a_reload_only_when_routes_change() -> None:
    fake = FakeRouter()
    router: Router = fake  # the fake satisfies the protocol
    await router.start()

    assert await router.apply_routes([RouteEntry(None, "/", WEB)]) is True
    assert await router.apply_routes([RouteEntry(None, "/", WEB)]) is False
    assert fake.reloads == 1


async def test_fake_rejects_what_the_renderer_rejects() -> None:
    fake = FakeRouter(running=True)

    with pytest.raises(InvalidInput, match="two routes"):
        await fake.apply_routes([RouteEntry(None, "/", WEB), RouteEntry(None, "/", API)])
    assert fake.routes == ()


async def test_fake_keeps_peers_without_reloading() -> None:
    fake = FakeRouter(running=True)
    peers = [Peer("r1-a", "127.0.0.1", 40001)]

    await fake.set_peers(WEB, peers)

    assert await fake.get_peers() == {WEB: peers}
    assert fake.reloads == 0
    assert fake.peer_pushes == [(WEB, tuple(peers))]


async def test_fake_can_be_down_or_reject_a_config() -> None:
    fake = FakeRouter(running=True)
    fake.reject_next_config = "nginx: [emerg] something"
    with pytest.raises(RouterConfigRejected):
        await fake.apply_routes([RouteEntry(None, "/", WEB)])
    assert fake.routes == ()

    fake.available = False
    assert not await fake.is_running()
    with pytest.raises(RouterUnavailable):
        await fake.set_peers(WEB, [])
