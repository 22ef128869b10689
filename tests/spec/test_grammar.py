"""The route language as the spec sees it: what an app may be named and may route.

That the router accepts exactly the same strings, and that what the spec accepts renders and
passes a real ``nginx -t``, is in tests/router/test_route_grammar.py.
"""

from __future__ import annotations

import pytest

from kiln.errors import SpecInvalid
from kiln.spec import grammar, validate_spec

BASE = {"app": "web", "image": "x", "port": 80}


def _route_problems(route: dict[str, object]) -> list[str]:
    try:
        validate_spec({**BASE, "routes": [route]})
    except SpecInvalid as exc:
        return exc.problems
    return []


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/api",
        "/api/",
        "/v1/items-2_x.json",
        "/~user",
        "/a@b:c+d,e=f",
        "/%20",
        "//",
        "/a" * 500,
    ],
)
def test_route_paths_that_nginx_reads_back_as_themselves_are_accepted(path: str) -> None:
    assert _route_problems({"path": path}) == []
    assert grammar.path_problem(path) is None


@pytest.mark.parametrize(
    "path",
    [
        "/a#b",
        "/ü$x",
        "/caf\u00e9",
        "/a$b",
        "/a!",
        "/a*",
        "/a(b)",
        "/a[0]",
        "/a|b",
        "/a?b",
        "/a&b",
        "/a^b",
        "/a'b",
        '/a"b',
        "/a;b",
        "/a{b}",
        "/a b",
        "/a\tb",
        "/a\\b",
        "/a\n",
        "/a\r\nb",
        "/\x00",
        "api",
        "",
        "/" + "a" * 1024,
    ],
)
def test_route_paths_nginx_cannot_express_are_refused_naming_the_field(path: str) -> None:
    problems = _route_problems({"path": path})

    assert len(problems) == 1
    assert problems[0].startswith("routes.0.path: must start with / and use only ASCII letters")
    assert grammar.path_problem(path) is not None


@pytest.mark.parametrize(
    "host",
    [
        "web.example.com",
        "Web.Example.COM",
        "localhost",
        "*.example.com",
        "xn--caf-dma.example",
        "a-b.c-d.e",
        "123.example",
        "a" * 63 + ".example.com",
        ".".join(["a" * 63] * 3) + "." + "b" * 61,
    ],
)
def test_host_names_are_accepted_and_stored_lowercase(host: str) -> None:
    spec = validate_spec({**BASE, "routes": [{"host": host}]})

    assert spec.routes is not None and spec.routes[0].host == host.lower()
    assert grammar.host_problem(host) is None


@pytest.mark.parametrize(
    "host",
    [
        "bad host",
        "a.example.com;",
        "café.example",
        "\u212a.example.com",  # KELVIN SIGN: lowercases to an ASCII "k"
        "-a.example",
        "a-.example",
        "a..example",
        "a.example.",
        ".example",
        "*",
        "*.",
        "a.*.example",
        "**.example",
        "a_b.example",
        "a" * 64 + ".example",
        ".".join(["a" * 63] * 4),
        "a.example\n",
        "",
    ],
)
def test_hosts_that_are_not_host_names_are_refused_naming_the_field(host: str) -> None:
    problems = _route_problems({"host": host})

    assert len(problems) == 1
    assert problems[0].startswith("routes.0.host: must be a host name like web.example.com")
    assert grammar.host_problem(host) is not None


@pytest.mark.parametrize("field", ["app", "environment"])
@pytest.mark.parametrize(
    "name", ["Web", "1web", "web-", "-web", "w_b", "web\n", "wéb", "a" * 41, ""]
)
def test_app_and_environment_names_outside_the_grammar_are_refused(field: str, name: str) -> None:
    with pytest.raises(SpecInvalid) as caught:
        validate_spec({**BASE, field: name})

    assert caught.value.problems[0].startswith(f"{field}: must be a lowercase name")
    assert not grammar.is_name(name)


@pytest.mark.parametrize("name", ["a", "web", "web-2", "a" * 40, "production"])
def test_names_in_the_grammar_are_accepted_everywhere(name: str) -> None:
    spec = validate_spec({**BASE, "app": name, "environment": name})

    assert spec.key == f"{name}/{name}"


def test_a_long_value_is_echoed_cut_short() -> None:
    problems = _route_problems({"path": "/" + "#" * 100_000})

    assert len(problems[0]) < 300
    assert "(100001 characters)" in problems[0]


def test_the_same_host_and_path_twice_in_one_spec_is_refused() -> None:
    problems = _route_problems({"host": "a.example", "path": "/x"})
    assert problems == []

    with pytest.raises(SpecInvalid) as caught:
        validate_spec(
            {
                **BASE,
                "routes": [
                    {"host": "A.example", "path": "/x"},
                    {"host": "a.example", "path": "/x"},
                ],
            }
        )
    assert caught.value.problems == [
        "routes.1: same host and path as routes.0: give each route once"
    ]
