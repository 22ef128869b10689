"""The rendered nginx.conf: golden files, route validation, and a real ``nginx -t``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kiln.errors import InvalidInput
from kiln.model import AppKey, RouteEntry
from kiln.router.nginx import LUA_SOURCE_DIR
from kiln.router.render import render_nginx_conf

GOLDEN = Path(__file__).with_name("golden")
GOLDEN_ROOT = "/srv/kiln-golden"  # stands in for the real dirs in golden files
UPDATE = os.environ.get("KILN_UPDATE_GOLDEN") == "1"

WEB = AppKey("production", "web")
API = AppKey("production", "api")
DOCS = AppKey("staging", "docs")

SEVERAL_ROUTES = [
    RouteEntry(host=None, path="/", key=WEB),
    RouteEntry(host="api.example.com", path="/v1/", key=API),
    RouteEntry(host="api.example.com", path="/v1/docs/", key=DOCS),
    RouteEntry(host="docs.example.com", path="/", key=DOCS),
    RouteEntry(host=None, path="/status", key=API),
    RouteEntry(host="preview.example.com", path="/", key=WEB, preview=True),
]


def render(routes: list[RouteEntry], root: str = GOLDEN_ROOT) -> str:
    prefix = Path(root) / "nginx"
    return render_nginx_conf(
        routes,
        prefix=prefix,
        listen_host="127.0.0.1",
        listen_port=8080,
        admin_socket=Path(root) / "run" / "admin.sock",
        peers_file=prefix / "peers.json",
        lua_dir=prefix / "lua",
        user="root",
    )


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text(), f"render differs from {path}; KILN_UPDATE_GOLDEN=1 rewrites it"


def test_render_of_several_hosts_and_paths_matches_golden() -> None:
    check_golden("several_routes.conf", render(SEVERAL_ROUTES))


def test_render_with_no_routes_matches_golden() -> None:
    check_golden("no_routes.conf", render([]))


def test_render_does_not_depend_on_route_order() -> None:
    assert render(SEVERAL_ROUTES) == render(list(reversed(SEVERAL_ROUTES)))


def test_same_host_and_path_for_two_apps_is_rejected_naming_both() -> None:
    routes = [RouteEntry("a.example.com", "/x", WEB), RouteEntry("A.example.com", "/x", API)]
    with pytest.raises(InvalidInput, match=r"a\.example\.com and path /x.*production/web.*api"):
        render(routes)


def test_a_preview_route_and_a_normal_one_for_the_same_host_and_path_clash() -> None:
    routes = [RouteEntry(None, "/x", WEB), RouteEntry(None, "/x", WEB, preview=True)]
    with pytest.raises(InvalidInput, match=r"production/web and production/web \(preview\)"):
        render(routes)


def test_a_preview_route_picks_the_preview_release_in_the_access_phase() -> None:
    text = render(SEVERAL_ROUTES)
    preview_server = text.split("server_name preview.example.com;")[1].split("server_name")[0]
    root = preview_server.split("location / {")[1].split("}")[0]
    assert 'require("kiln_balancer").choose_preview()' in root
    other = text.split("server_name docs.example.com;")[1].split("server_name")[0]
    assert "choose_preview" not in other


def test_same_path_on_different_hosts_is_fine() -> None:
    text = render([RouteEntry("a.example.com", "/", WEB), RouteEntry("b.example.com", "/", API)])
    assert "server_name a.example.com;" in text
    assert "server_name b.example.com;" in text


def test_host_less_routes_also_serve_named_hosts_unless_the_host_has_that_path() -> None:
    text = render(SEVERAL_ROUTES)
    api_server = text.split("server_name api.example.com;")[1].split("server_name")[0]
    assert 'location /status {\n            set $kiln_upstream "production/api";' in api_server
    docs_server = text.split("server_name docs.example.com;")[1].split("server_name")[0]
    assert 'location / {\n            set $kiln_upstream "staging/docs";' in docs_server


@pytest.mark.parametrize(
    ("route", "problem"),
    [
        (RouteEntry(None, "/a;b", WEB), "path"),
        (RouteEntry(None, "/a#b", WEB), "path"),
        (RouteEntry(None, "/a b", WEB), "path"),
        (RouteEntry(None, "/$host", WEB), "path"),
        (RouteEntry(None, "no-slash", WEB), "path"),
        (RouteEntry("bad host", "/", WEB), "host"),
        (RouteEntry("a.example.com;", "/", WEB), "host"),
        (RouteEntry(None, "/", AppKey("prod", 'web"')), "lowercase names"),
    ],
)
def test_route_nginx_cannot_express_safely_is_rejected(route: RouteEntry, problem: str) -> None:
    with pytest.raises(InvalidInput, match=problem):
        render([route])


@pytest.mark.integration
@pytest.mark.parametrize("name", ["several_routes.conf", "no_routes.conf"])
def test_golden_config_passes_nginx_t(name: str, tmp_path: Path) -> None:
    root = tmp_path
    prefix = root / "nginx"
    for sub in (prefix / "logs", prefix / "temp", root / "run"):
        sub.mkdir(parents=True)
    shutil.copytree(LUA_SOURCE_DIR, prefix / "lua")
    conf = prefix / "nginx.conf"
    conf.write_text((GOLDEN / name).read_text().replace(GOLDEN_ROOT, str(root)))
    result = subprocess.run(
        ["nginx", "-t", "-p", str(prefix), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
