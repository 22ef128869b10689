"""Any valid spec survives dump → validate unchanged, with the same release hash."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.spec import spec_hash, validate_spec

names = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
env_names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True).filter(lambda n: n != "PORT")
durations = st.one_of(
    st.floats(0, 3600, allow_nan=False),
    st.integers(0, 600).map(lambda n: f"{n}s"),
    st.integers(0, 5000).map(lambda n: f"{n}ms"),
    st.tuples(st.integers(0, 59), st.integers(0, 59)).map(lambda t: f"{t[0]}m{t[1]}s"),
)
hosts = st.from_regex(r"([a-z0-9]{1,8}\.){0,2}[a-z]{2,6}", fullmatch=True)
paths = st.from_regex(r"/[a-z0-9/_-]{0,12}", fullmatch=True)
# Any text a program can be given: everything but NUL (and lone surrogates, not Unicode).
words = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=10)
program_words = words.filter(bool)
images = st.from_regex(r"[a-z0-9]+(/[a-z0-9._-]+)*(:[A-Za-z0-9._-]+)?", fullmatch=True)


@st.composite
def probes(draw: st.DrawFn, *, nested: bool) -> dict[str, Any]:
    kind = draw(st.sampled_from(["http", "tcp", "command", "default"]))
    probe: dict[str, Any] = {}
    if kind == "http":
        probe["http"] = draw(paths)
    elif kind == "tcp":
        probe["tcp"] = True
    elif kind == "command":
        probe["command"] = draw(st.lists(program_words, min_size=1, max_size=3))
    interval = draw(st.floats(0.5, 30))
    probe["interval"] = interval
    probe["timeout"] = draw(st.floats(0, interval))
    probe["grace"] = draw(durations)
    if draw(st.booleans()):
        probe["idle_interval"] = draw(durations)
    probe["healthy_threshold"] = draw(st.integers(1, 5))
    if not nested:
        probe["readiness"] = draw(st.none() | probes(nested=True))
        probe["liveness"] = draw(st.none() | probes(nested=True))
    return probe


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    port = draw(st.none() | st.integers(1, 65535))
    strategy = draw(st.sampled_from(["rolling", "recreate"]))
    max_surge = draw(st.integers(0, 5))
    spec: dict[str, Any] = {
        "app": draw(names),
        "environment": draw(names),
        "image": draw(images),
        "command": draw(st.none() | st.lists(program_words, min_size=1)),
        "env": draw(st.dictionaries(env_names, words | st.integers(), max_size=4)),
        "port": port,
        "instances": draw(st.integers(0, 100)),
        "resources": {
            "cpus": draw(st.none() | st.floats(0.01, 64)),
            "memory": draw(st.none() | st.integers(6, 4096).map(lambda n: f"{n}Mi")),
        },
        "deploy": {
            "strategy": strategy,
            "max_surge": max_surge,
            "max_unavailable": draw(st.integers(0 if max_surge else 1, 5)),
            "deadline": draw(st.integers(1, 600).map(lambda n: f"{n}s")),
            "drain": draw(durations),
        },
        "stop_grace": draw(durations),
        "security": {
            "read_only": draw(st.booleans()),
            "cap_add": draw(st.lists(st.sampled_from(["NET_ADMIN", "CAP_CHOWN", "SYS_TIME"]))),
            "tmpfs": draw(
                st.lists(
                    st.sampled_from(["/tmp", "/run", "/var/cache/app:size=16m,mode=1777"]),
                    unique=True,
                )
            ),
        },
    }
    if port is not None:
        spec["routes"] = draw(
            st.none()
            | st.lists(
                st.fixed_dictionaries({"host": st.none() | hosts, "path": paths}),
                unique_by=lambda r: (r["host"], r["path"]),
            )
        )
        spec["health"] = draw(st.none() | probes(nested=False))
    return spec


@settings(max_examples=50, deadline=None)
@given(specs())
def test_valid_spec_round_trips_through_its_dump(data: dict[str, Any]) -> None:
    spec = validate_spec(data)

    for mode in ("python", "json"):
        again = validate_spec(spec.model_dump(mode=mode))
        assert again == spec
        assert spec_hash(again) == spec_hash(spec)
