"""What one spec may ask for, and specs that could never run, refused when the release is made.

Every refusal names the field and the limit; a spec exactly at a limit is accepted.
"""

from __future__ import annotations

from typing import Any

import pytest

from kiln.errors import SpecInvalid
from kiln.spec import (
    MAX_COMMAND_ARGS,
    MAX_ENV_BYTES,
    MAX_ENV_VALUE_BYTES,
    MAX_INSTANCES,
    MAX_ROUTES,
    HostLimits,
    check_runnable,
    validate_spec,
)

OK: dict[str, Any] = {"app": "web", "image": "nginx:1.27", "port": 80}


def _problems(fields: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecInvalid) as caught:
        validate_spec({**OK, **fields})
    return caught.value.problems


def _routes(n: int) -> list[dict[str, str]]:
    return [{"path": f"/r{i}"} for i in range(n)]


def _env(total_bytes: int) -> dict[str, str]:
    """Variables whose NAME=value add up to exactly ``total_bytes``."""
    env: dict[str, str] = {}
    left = total_bytes
    i = 0
    while left:
        name = f"V{i:05d}"
        size = min(left, 1000)
        env[name] = "x" * (size - len(name) - 1)
        left -= size
        i += 1
    return env


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"routes": _routes(MAX_ROUTES + 1)}, "routes: at most 100 entries, got 101"),
        ({"instances": MAX_INSTANCES + 1}, "instances: must be ≤ 100, got 101"),
        ({"deploy": {"max_surge": 101}}, "deploy.max_surge: must be ≤ 100, got 101"),
        (
            {"env": _env(MAX_ENV_BYTES + 1)},
            "env: at most 64 KiB in all (every NAME=value), got 65537 bytes",
        ),
        (
            {"env": {"BIG": "x" * (MAX_ENV_VALUE_BYTES + 1)}},
            "env.BIG: a value is at most 32 KiB, got 32769 bytes",
        ),
        (
            {"env": {"N" * 257: "x"}},
            "env." + "N" * 39 + "…: names are at most 256 characters",
        ),
        (
            {"command": ["x"] * (MAX_COMMAND_ARGS + 1)},
            "command: at most 256 words (program and arguments), got 257",
        ),
        (
            {"command": ["sh", "-c", "x" * 70_000]},
            "command: at most 64 KiB in all, got 70004 bytes",
        ),
        (
            {"health": {"command": ["x"] * (MAX_COMMAND_ARGS + 1)}},
            "health.command: at most 256 words (program and arguments), got 257",
        ),
        ({"image": "r/" + "a" * 1023}, "image: string should have at most 1024 characters"),
        ({"security": {"tmpfs": [f"/t{i}" for i in range(33)]}}, "security.tmpfs: at most 32"),
        ({"security": {"cap_add": ["CHOWN"] * 65}}, "security.cap_add: at most 64 entries"),
    ],
)
def test_a_spec_asking_too_much_is_refused_naming_field_and_limit(
    fields: dict[str, Any], problem: str
) -> None:
    problems = _problems(fields)

    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_a_spec_exactly_at_every_limit_is_accepted() -> None:
    spec = validate_spec(
        {
            **OK,
            "routes": _routes(MAX_ROUTES),
            "instances": MAX_INSTANCES,
            "env": _env(MAX_ENV_BYTES),
            "command": ["x"] * MAX_COMMAND_ARGS,
        }
    )

    assert len(spec.routes or []) == MAX_ROUTES
    assert sum(len(k) + 1 + len(v) for k, v in spec.env.items()) == MAX_ENV_BYTES


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (
            {"env": {"A": "a\x00b"}},
            "env.A: contains a NUL character, which no environment variable can hold",
        ),
        (
            {"command": ["sh", "-c", "a\x00b"]},
            "command.2: contains a NUL character, which no program can be given: 'a\\x00b'",
        ),
        ({"command": ["", "x"]}, "command: must name a program to run, got ['', 'x']"),
        (
            {"command": ["x", "\ud800"]},  # JSON can carry a lone surrogate; UTF-8 cannot
            "command.1: is not valid Unicode text (a lone surrogate), got '\\ud800'",
        ),
        (
            {"env": {"A": "\udcff"}},
            "env.A: is not valid Unicode text (a lone surrogate), got '\\udcff'",
        ),
        (
            {"security": {"tmpfs": ["/t\ud800"]}},
            "security.tmpfs.0: must be an absolute path other than /",
        ),
        (
            {"security": {"tmpfs": ["tmp"]}},
            "security.tmpfs.0: must be an absolute path other than / (no spaces, commas or"
            " colons), optionally followed by :OPTIONS, got 'tmp'",
        ),
        ({"security": {"tmpfs": ["/"]}}, "security.tmpfs.0: must be an absolute path other than /"),
        (
            {"security": {"tmpfs": ["/a b"]}},
            "security.tmpfs.0: must be an absolute path other than /",
        ),
        (
            {"security": {"tmpfs": ["/tmp:size=64m;rm -rf"]}},
            "security.tmpfs.0: mount options are like size=64m,mode=1777, got 'size=64m;rm -rf'",
        ),
        ({"security": {"tmpfs": ["/tmp:"]}}, "security.tmpfs.0: mount options are like"),
        ({"security": {"tmpfs": ["/tmp", "/tmp/"]}}, "security.tmpfs.1: /tmp/ is given twice"),
        (
            {"resources": {"memory": "9Ei"}},
            "resources.memory: expected a size like 128Mi, 512M or 1Gi, got '9Ei'",
        ),
        (
            {"resources": {"memory": "8796093022208Mi"}},
            "resources.memory: must be ≤ 9223372036854775807, got '8796093022208Mi'",
        ),
        (
            {"resources": {"memory": 2**63}},
            "resources.memory: must be ≤ 9223372036854775807, got 9223372036854775808",
        ),
        ({"resources": {"cpus": 0.001}}, "resources.cpus: must be ≥ 0.01, got 0.001"),
        ({"resources": {"cpus": True}}, "resources.cpus: expected a number, got true"),
        (
            {"health": {"http": "/healthz\r\nX-Evil: 1"}},
            "health.http: must be a path starting with / in visible ASCII (no spaces or control"
            " characters; at most 1024 characters), got '/healthz\\r\\nX-Evil: 1'",
        ),
        ({"health": {"http": "/a b"}}, "health.http: must be a path starting with / in visible"),
        ({"health": {"http": "/é"}}, "health.http: must be a path starting with / in visible"),
        (
            {"health": {"liveness": {"http": "/ok\n"}}},
            "health.liveness.http: must be a path starting with / in visible",
        ),
        (
            {"image": "web:1.4\n"},
            "image: must be an image reference like web:1.4 (visible ASCII), got 'web:1.4\\n'",
        ),
        ({"image": "wéb"}, "image: must be an image reference like web:1.4 (visible ASCII)"),
    ],
)
def test_a_spec_that_could_never_run_is_refused_naming_the_field(
    fields: dict[str, Any], problem: str
) -> None:
    problems = _problems(fields)

    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_tmpfs_takes_paths_with_mount_options() -> None:
    spec = validate_spec({**OK, "security": {"tmpfs": ["/tmp", "/var/cache:size=16m,mode=1777"]}})

    assert spec.security.tmpfs == ["/tmp", "/var/cache:size=16m,mode=1777"]


def test_numbers_in_a_command_are_its_words() -> None:
    assert validate_spec({**OK, "command": ["sleep", 3600]}).command == ["sleep", "3600"]


def test_probe_paths_may_carry_a_query() -> None:
    spec = validate_spec({**OK, "health": {"http": "/healthz?full=1&x=%20"}})

    assert spec.health is not None and spec.health.http == "/healthz?full=1&x=%20"


HOST = HostLimits(cpus=2.0, memory_bytes=4 * 1024**3)


@pytest.mark.parametrize(
    ("resources", "problems"),
    [
        ({"cpus": 2, "memory": "4Gi"}, []),
        ({"cpus": None, "memory": None}, []),
        ({"cpus": 64}, ["resources.cpus: 64 is more than this host's 2 CPUs"]),
        ({"cpus": 2.5}, ["resources.cpus: 2.5 is more than this host's 2 CPUs"]),
        (
            {"memory": "16Gi"},
            ["resources.memory: 16Gi is more than this host's 4Gi of memory"],
        ),
        (
            {"cpus": 3, "memory": "4097Mi"},
            [
                "resources.cpus: 3 is more than this host's 2 CPUs",
                "resources.memory: 4.001Gi is more than this host's 4Gi of memory",
            ],
        ),
    ],
)
def test_check_runnable_compares_one_instance_with_the_host(
    resources: dict[str, Any], problems: list[str]
) -> None:
    spec = validate_spec({**OK, "resources": resources})

    assert check_runnable(spec, HOST) == problems


def test_host_limits_are_frozen_and_keyword_only() -> None:
    with pytest.raises(TypeError):
        HostLimits(2.0, 1024)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        HOST.cpus = 4  # type: ignore[misc]
