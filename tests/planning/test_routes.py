"""The route table: one entry per host and path; two apps may not claim the same one."""

from __future__ import annotations

import pytest

from kiln.errors import Conflict
from kiln.model import AppKey, RouteEntry
from kiln.planning import route_table

from .builders import make_release

WEB = AppKey("dev", "web")
API = AppKey("dev", "api")


def test_default_route_is_app_dot_environment_dot_localhost() -> None:
    assert route_table([make_release(1, key=WEB)]) == [
        RouteEntry(host="web.dev.localhost", path="/", key=WEB)
    ]


def test_two_apps_on_one_host_and_path_is_a_conflict_naming_both() -> None:
    web = make_release(1, key=WEB, routes=[{"host": "shop.test", "path": "/"}])
    api = make_release(1, key=API, routes=[{"host": "shop.test", "path": "/"}])

    with pytest.raises(Conflict) as caught:
        route_table([web, api])

    assert "shop.test/ is already served by dev/web" in caught.value.message


def test_same_app_listed_twice_gives_one_entry() -> None:
    web = make_release(1, key=WEB)

    assert len(route_table([web, web])) == 1


def test_apps_share_a_host_on_different_paths_sorted_by_host_then_path() -> None:
    web = make_release(1, key=WEB, routes=[{"host": "shop.test", "path": "/"}])
    api = make_release(1, key=API, routes=[{"host": "shop.test", "path": "/api"}, {"path": "/x"}])

    assert route_table([web, api]) == [
        RouteEntry(host=None, path="/x", key=API),
        RouteEntry(host="shop.test", path="/", key=WEB),
        RouteEntry(host="shop.test", path="/api", key=API),
    ]


def test_app_without_a_port_has_no_routes() -> None:
    assert route_table([make_release(1, key=WEB, port=None)]) == []
