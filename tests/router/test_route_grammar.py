"""The spec and the router speak one route language (``kiln.spec.grammar``).

Whatever a spec accepts renders into a config a real NGINX accepts, and whatever the renderer
refuses the spec has already refused: a stored release can never break the routes of the
other apps.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kiln.errors import InvalidInput, SpecInvalid
from kiln.model import AppKey, RouteEntry
from kiln.router.nginx import LUA_SOURCE_DIR
from kiln.router.render import render_nginx_conf
from kiln.spec import AppSpec, grammar, validate_spec

# Strings near the grammar: its alphabet, NGINX's special characters, non-ASCII, controls.
_ALPHABET = st.sampled_from(
    list("abcz09AZ-._~/@:+,=%*") + list("#$!()[]|?&^'\"; {}\\\t\n\r\x00ü\u212a")
)
near_text = st.text(_ALPHABET, max_size=12)
paths = st.one_of(
    st.from_regex(grammar.PATH_PATTERN, fullmatch=True),
    near_text.map(lambda t: "/" + t),
    near_text,
)
hosts = st.one_of(st.from_regex(grammar.HOST_PATTERN, fullmatch=True), near_text)
names = st.one_of(st.from_regex(grammar.NAME_PATTERN, fullmatch=True), near_text)


def _render(routes: list[RouteEntry], root: Path = Path("/srv/kiln-grammar")) -> str:
    prefix = root / "nginx"
    return render_nginx_conf(
        routes,
        prefix=prefix,
        listen_host="127.0.0.1",
        listen_port=8080,
        admin_socket=root / "run" / "admin.sock",
        peers_file=prefix / "peers.json",
        lua_dir=prefix / "lua",
        user="root",
    )


def _renders(host: str | None, path: str, key: AppKey = AppKey("dev", "web")) -> bool:
    try:
        _render([RouteEntry(host=host, path=path, key=key)])
    except InvalidInput:
        return False
    return True


def _spec(**fields: Any) -> AppSpec | None:
    try:
        return validate_spec({"app": "web", "image": "x", "port": 80, **fields})
    except SpecInvalid:
        return None


@settings(max_examples=300, deadline=None)
@given(path=paths)
@example(path="/a#b")
@example(path="/ü$x")
@example(path="/a\n")
def test_spec_and_router_accept_the_same_paths(path: str) -> None:
    assert (_spec(routes=[{"path": path}]) is not None) == _renders(None, path)


@settings(max_examples=300, deadline=None)
@given(host=hosts)
@example(host="\u212a.example.com")
@example(host="a.example\n")
def test_spec_and_router_accept_the_same_hosts(host: str) -> None:
    assert (_spec(routes=[{"host": host}]) is not None) == _renders(host, "/")


@settings(max_examples=200, deadline=None)
@given(name=names)
@example(name="1web")
@example(name="a" * 41)
def test_spec_and_router_accept_the_same_app_and_environment_names(name: str) -> None:
    assert (_spec(app=name) is not None) == _renders(None, "/", AppKey("dev", name))
    assert (_spec(environment=name) is not None) == _renders(None, "/", AppKey(name, "web"))


@st.composite
def accepted_route_tables(draw: st.DrawFn) -> list[RouteEntry]:
    """The routes of several specs that kiln accepted, as the router would get them."""
    valid_names = st.from_regex(grammar.NAME_PATTERN, fullmatch=True)
    route = st.fixed_dictionaries(
        {
            "host": st.none() | st.from_regex(grammar.HOST_PATTERN, fullmatch=True) | hosts,
            "path": st.from_regex(grammar.PATH_PATTERN, fullmatch=True) | paths,
        }
    )
    table: dict[tuple[str | None, str], RouteEntry] = {}
    for _ in range(draw(st.integers(3, 8))):
        # Each route on its own first, so one refused route does not hide the others.
        accepted = [r for r in draw(st.lists(route, max_size=8)) if _spec(routes=[r]) is not None]
        unique = {(r["host"] and r["host"].lower(), r["path"]): r for r in accepted}
        spec = _spec(
            app=draw(valid_names),
            environment=draw(valid_names),
            routes=list(unique.values()) if unique else None,
        )
        assert spec is not None
        key = AppKey(spec.environment, spec.app)
        for entry in spec.effective_routes():
            # One app per host + path, as the controller's route-clash check makes it.
            table.setdefault(
                (entry.host, entry.path), RouteEntry(host=entry.host, path=entry.path, key=key)
            )
    return list(table.values())


@pytest.mark.integration
@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tables=st.lists(accepted_route_tables(), min_size=4, max_size=4))
def test_every_route_a_spec_accepts_passes_nginx_t(
    tables: list[list[RouteEntry]], tmp_path: Path
) -> None:
    # One config per example, holding every route of about 20 accepted specs, and the longest
    # host names a spec can make by default (<app>.<env>.localhost, 91 characters).
    longest = AppKey("a" * 40, "b" * 40)
    routes = {(r.host, r.path): r for table in tables for r in table}
    routes[(f"{longest.app}.{longest.environment}.localhost", "/")] = RouteEntry(
        host=f"{longest.app}.{longest.environment}.localhost", path="/", key=longest
    )
    routes[("*." + ".".join(["a" * 63] * 3) + ".b", "/")] = RouteEntry(
        host="*." + ".".join(["a" * 63] * 3) + ".b", path="/", key=longest
    )

    result = _nginx_t(list(routes.values()), tmp_path)

    assert result.returncode == 0, result.stderr


def _nginx_t(routes: list[RouteEntry], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    root = Path(tmp_path) / f"n{len(list(tmp_path.iterdir()))}"
    prefix = root / "nginx"
    for sub in (prefix / "logs", prefix / "temp", root / "run"):
        sub.mkdir(parents=True)
    shutil.copytree(LUA_SOURCE_DIR, prefix / "lua")
    conf = prefix / "nginx.conf"
    conf.write_text(_render(routes, root))
    try:
        return subprocess.run(
            ["nginx", "-t", "-p", str(prefix), "-c", str(conf)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
