"""Render the whole nginx.conf from kiln's routes: a pure function, golden-tested.

Routes (host + path prefix → app) live in the config and change by reload; peers (which
instances serve an app, with weights) live in a Lua shared dict and change with no reload.
Every route location therefore proxies to the same ``kiln_backend`` upstream and only names
its app in ``$kiln_upstream``; the Lua balancer picks a peer of that app per request.

Host matching: one ``server`` per host; routes without a host go to the default server *and*
act as fallbacks in every named host's server (``RouteEntry.host`` None means "any host"),
unless that host has its own route for the same path. Within a server NGINX's rule for prefix
locations applies: the longest matching prefix wins. Anything unmatched gets a plain-text 404.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import InvalidInput
from kiln.model import AppKey, RouteEntry
from kiln.spec import grammar

NGINX_MODULES_DIR = Path("/usr/lib/nginx/modules")
"""Debian's libnginx-mod-http-{ndk,lua}; under ``-p`` ``load_module`` needs absolute paths."""

SHARED_DICT = "kiln_peers"
"""The Lua shared dict holding the peer lists and policies (kiln_peers.lua uses the same name)."""

STATS_DICTS = {"kiln_in_flight": "1m", "kiln_traffic": "10m", "kiln_traffic_index": "1m"}
"""kiln_stats.lua's shared dicts: in-flight counts, per-release counters, their index."""

# Debian's lua-resty-core/lrucache live in /usr/share/lua/5.1; lua-cjson's cjson.so in the
# multiarch Lua 5.1 dir. Both multiarch dirs are listed so the same config works on arm64.
LUA_SYSTEM_PATH = "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"
LUA_SYSTEM_CPATH = "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;/usr/lib/aarch64-linux-gnu/lua/5.1/?.so"

_LOG_FORMAT = (
    '{"time":"$time_iso8601",'
    '"upstream":"$kiln_upstream",'
    '"host":"$host",'
    '"method":"$request_method",'
    '"uri":"$uri",'
    '"status":$status,'
    '"request_time":$request_time,'
    '"release":$kiln_release,'
    '"instance":"$kiln_instance",'
    '"upstream_addr":"$upstream_addr",'
    '"upstream_status":"$upstream_status",'
    '"upstream_response_time":"$upstream_response_time",'
    '"bytes_sent":$body_bytes_sent,'
    '"connection":$connection,'
    '"connection_requests":$connection_requests}'
)


def render_nginx_conf(
    routes: Sequence[RouteEntry],
    *,
    prefix: Path,
    listen_host: str,
    listen_port: int,
    admin_socket: Path,
    peers_file: Path,
    lua_dir: Path,
    user: str | None = None,
) -> str:
    """The complete nginx.conf for these routes.

    ``user`` is the account NGINX's workers run as when the master runs as root (``None``
    leaves the directive out, for a master that is not root). Raises ``InvalidInput`` for a
    route NGINX cannot express safely or for the same host + path given twice.
    """
    for route in routes:
        _check_route(route)
    _check_listen(listen_host, listen_port)
    for p in (prefix, admin_socket, peers_file, lua_dir):
        _check_file_path(p)

    grouped = _group_by_host(routes)
    default_routes = grouped.pop(None, {})
    by_host = {host: paths for host, paths in grouped.items() if host is not None}

    out = _Writer()
    if user is not None:
        out.line(f"user {user};")
    out.line(f"load_module {NGINX_MODULES_DIR / 'ndk_http_module.so'};")
    out.line(f"load_module {NGINX_MODULES_DIR / 'ngx_http_lua_module.so'};")
    out.line("worker_processes auto;")
    out.line(f"pid {prefix / 'nginx.pid'};")
    out.line(f"lock_file {prefix / 'nginx.lock'};")
    out.line(f"error_log {prefix / 'logs' / 'error.log'} warn;")
    out.line()
    with out.block("events"):
        out.line("worker_connections 4096;")
    out.line()
    with out.block("http"):
        bucket = _server_names_bucket_size(by_host)
        if bucket is not None:
            out.comment("Room for the longest server_name (NGINX's default fits 46 characters).")
            out.line(f"server_names_hash_bucket_size {bucket};")
        _http_settings(out, prefix=prefix, peers_file=peers_file, lua_dir=lua_dir)
        out.line()
        with out.block("upstream kiln_backend"):
            out.comment("Never used: the Lua balancer sets the peer of every request.")
            out.line("server 0.0.0.1;")
            out.line('balancer_by_lua_block { require("kiln_balancer").balance() }')
            out.comment("After balancer_by_lua so that keepalive wraps the Lua balancer.")
            out.line("keepalive 64;")
            out.line("keepalive_timeout 60s;")
        out.line()
        listen = f"{_listen_address(listen_host)}:{listen_port}"
        with out.block("server"):
            out.line(f"listen {listen} default_server;")
            out.line("server_name _;")
            _server_body(out, default_routes)
        for host in sorted(by_host):
            merged = dict(default_routes)
            merged.update(by_host[host])
            out.line()
            with out.block("server"):
                out.line(f"listen {listen};")
                out.line(f"server_name {host};")
                _server_body(out, merged)
        out.line()
        _admin_server(out, admin_socket)
    return out.text()


def _check_route(route: RouteEntry) -> None:
    # The spec accepts exactly this language (kiln.spec.grammar), so a stored release's
    # routes always pass here and one app's routes can never break the config of the others.
    key = route.key
    if not (grammar.is_name(key.environment) and grammar.is_name(key.app)):
        raise InvalidInput(
            f"route {route.host or '*'}{route.path}: app {key} is not ENV/APP with lowercase "
            "names (a-z, 0-9, -)"
        )
    if route.host is not None and (problem := grammar.host_problem(route.host)):
        raise InvalidInput(f"route for {key}: host {problem}")
    if problem := grammar.path_problem(route.path):
        raise InvalidInput(f"route for {key}: path {problem}")


def _check_listen(host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise InvalidInput(f"the router's listen port must be 1..65535, got {port}")
    if not re.fullmatch(r"[0-9A-Za-z.:\-]+", host):
        raise InvalidInput(f"the router's listen host must be an address, got {host!r}")


def _check_file_path(path: Path) -> None:
    text = str(path)
    if not path.is_absolute() or re.search(r"[\s;{}\"'#$\\]", text):
        raise InvalidInput(
            f"{text!r}: NGINX paths must be absolute and free of spaces and ; {{ }} \" ' # $ \\"
        )


def _group_by_host(routes: Sequence[RouteEntry]) -> dict[str | None, dict[str, _Target]]:
    by_host: dict[str | None, dict[str, _Target]] = defaultdict(dict)
    for route in routes:
        host = route.host.lower() if route.host is not None else None
        paths = by_host[host]
        target = _Target(route.key, route.preview)
        if route.path in paths:
            raise InvalidInput(
                f"two routes for host {host or '(any)'} and path {route.path}: "
                f"{paths[route.path]} and {target}; give each host + path to one app"
            )
        paths[route.path] = target
    return by_host


def _server_names_bucket_size(hosts: Iterable[str]) -> int | None:
    """A bucket size that holds the longest host name, or None when NGINX's default (64) does.

    NGINX refuses the whole config ("could not build server_names_hash") when one name does
    not fit: a bucket needs two pointers plus the name and 2 bytes, aligned to 8.
    """
    longest = max((len(h) for h in hosts), default=0)
    needed = 16 + (longest + 2 + 7) // 8 * 8
    return None if needed <= 64 else 1 << (needed - 1).bit_length()


def _listen_address(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _http_settings(out: _Writer, *, prefix: Path, peers_file: Path, lua_dir: Path) -> None:
    temp = prefix / "temp"
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        out.line(f"{kind}_temp_path {temp / kind};")
    out.line()
    out.line("default_type application/octet-stream;")
    out.line("server_tokens off;")
    out.comment("Clients keep their connections: a peer change never closes one.")
    out.line("keepalive_timeout 75s;")
    out.line("keepalive_requests 10000;")
    out.line()
    out.line(f"log_format kiln_json escape=json '{_LOG_FORMAT}';")
    # Buffered: one write per 64 KiB or per second instead of one per request.
    out.line(f"access_log {prefix / 'logs' / 'access.log'} kiln_json buffer=64k flush=1s;")
    out.line()
    out.comment("Host passthrough; $host stands in for clients that send no Host header.")
    with out.block("map $http_host $kiln_proxy_host"):
        out.line('"" $host;')
        out.line("default $http_host;")
    out.line("proxy_http_version 1.1;")
    out.comment('Connection "" lets NGINX keep upstream connections alive.')
    out.line('proxy_set_header Connection "";')
    out.line("proxy_set_header Host $kiln_proxy_host;")
    out.line("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
    out.line("proxy_set_header X-Forwarded-Proto $scheme;")
    out.line("proxy_connect_timeout 1s;")
    out.line("proxy_send_timeout 60s;")
    out.line("proxy_read_timeout 60s;")
    out.comment("Retried on another peer only if the app never answered (no http_5xx: an answer")
    out.comment("is final), and POST/PATCH/LOCK only if never sent (no non_idempotent).")
    out.line("proxy_next_upstream error timeout;")
    out.line("proxy_next_upstream_tries 3;")
    out.line("proxy_next_upstream_timeout 10s;")
    out.line()
    out.line(f"lua_package_path '{lua_dir}/?.lua;{LUA_SYSTEM_PATH};;';")
    out.line(f"lua_package_cpath '{LUA_SYSTEM_CPATH};;';")
    out.comment("Peer lists: survive a reload; peers.json refills them after a restart.")
    out.line(f"lua_shared_dict {SHARED_DICT} 10m;")
    out.comment("In-flight counts and per-release counters (a restart starts them from 0).")
    for name, size in STATS_DICTS.items():
        out.line(f"lua_shared_dict {name} {size};")
    out.comment("The master loads the Lua modules, so workers never read kiln's files.")
    with out.block("init_by_lua_block"):
        out.line(f'require("kiln_peers").init("{peers_file}")')
        out.line('require("kiln_balancer")')
        out.line('require("kiln_admin")')
    out.line('init_worker_by_lua_block { require("kiln_admin").init_worker() }')


def _server_body(out: _Writer, paths: dict[str, _Target]) -> None:
    out.comment("Declared for every request, so the access log never sees them unset;")
    out.comment("the balancer sets the release and instance of the peer that answers.")
    out.line('set $kiln_upstream "";')
    out.line("set $kiln_release 0;")
    out.line('set $kiln_instance "";')
    out.line('set $kiln_set_cookie "";')
    for path in sorted(paths):
        target = paths[path]
        choose = "choose_preview" if target.preview else "choose"
        with out.block(f"location {path}"):
            if target.preview:
                out.comment("A preview route: only the app's preview release answers.")
            out.line(f'set $kiln_upstream "{target.key}";')
            out.line(f'access_by_lua_block {{ require("kiln_balancer").{choose}() }}')
            out.line("proxy_pass http://kiln_backend;")
            out.comment(
                "The canary's sticky cookie; empty (so not sent) unless the canary answered."
            )
            out.line("add_header Set-Cookie $kiln_set_cookie always;")
            out.line('log_by_lua_block { require("kiln_balancer").log() }')
    if "/" not in paths:
        with out.block("location /"):
            out.line("default_type text/plain;")
            out.line('return 404 "no app serves $host$uri\\n";')


def _admin_server(out: _Writer, admin_socket: Path) -> None:
    out.comment("The admin endpoint: a unix socket in kiln's private run dir, never the network.")
    with out.block("server"):
        out.line(f"listen unix:{admin_socket};")
        out.line("access_log off;")
        out.line("default_type application/json;")
        out.line("client_max_body_size 1m;")
        out.line("client_body_buffer_size 1m;")
        with out.block("location = /status"):
            out.line('content_by_lua_block { require("kiln_admin").status() }')
        with out.block("location = /stub_status"):
            out.line("stub_status;")
        with out.block("location /peers"):
            out.line('content_by_lua_block { require("kiln_admin").peers() }')
        with out.block("location = /in_flight"):
            out.line('content_by_lua_block { require("kiln_admin").in_flight() }')
        with out.block("location = /traffic"):
            out.line('content_by_lua_block { require("kiln_admin").traffic() }')
        with out.block("location /"):
            out.line('return 404 "{\\"error\\": \\"unknown admin path\\"}\\n";')


@dataclass(frozen=True)
class _Target:
    """What a location serves: an app, or only its preview release."""

    key: AppKey
    preview: bool

    def __str__(self) -> str:
        return f"{self.key} (preview)" if self.preview else str(self.key)


class _Writer:
    """Indented lines; ``block`` opens and closes a ``name { ... }`` context."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._depth = 0

    def line(self, text: str = "") -> None:
        self._lines.append(("    " * self._depth + text) if text else "")

    def comment(self, text: str) -> None:
        self.line(f"# {text}")

    def block(self, head: str) -> _Block:
        return _Block(self, head)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


class _Block:
    def __init__(self, writer: _Writer, head: str) -> None:
        self._writer = writer
        self._head = head

    def __enter__(self) -> None:
        self._writer.line(f"{self._head} {{")
        self._writer._depth += 1

    def __exit__(self, *exc: object) -> None:
        self._writer._depth -= 1
        self._writer.line("}")
