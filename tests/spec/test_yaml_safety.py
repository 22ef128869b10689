"""Any text, however hostile, is parsed in bounded time and memory, and refused clearly.

No timings are asserted here (bench/ measures); memory is, because a refusal that first fills
the memory of the server is no refusal.
"""

from __future__ import annotations

import contextlib
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiln.errors import SpecInvalid
from kiln.spec import MAX_SPEC_BYTES, parse_spec

HEAD = "app: web\nimage: x\n"

# The classic "billion laughs": 342 bytes that expand to 9^9 strings.
ALIAS_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _problems(text: str | bytes) -> list[str]:
    with pytest.raises(SpecInvalid) as caught:
        parse_spec(text)
    return caught.value.problems


def _peak_bytes(text: str | bytes) -> int:
    """The most memory ``parse_spec`` held at once, whether it accepts the text or not."""
    tracemalloc.start()
    try:
        with contextlib.suppress(SpecInvalid):
            parse_spec(text)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_alias_bomb_is_refused_without_expanding_it() -> None:
    assert _problems(HEAD + ALIAS_BOMB) == [
        "line 8, column 4: the document has more than 100,000 values once its aliases are expanded"
    ]
    assert _peak_bytes(HEAD + ALIAS_BOMB) < 2_000_000


def test_a_few_aliases_and_merge_keys_work() -> None:
    spec = parse_spec(
        HEAD
        + "port: 80\n"
        + "health: &probe {http: /healthz, interval: 5s}\n"
        + "deploy: {deadline: 60s}\n"
        + "env:\n  <<: {A: '1', B: '2'}\n  B: '3'\n"
        + "security: {tmpfs: &dirs [/tmp, /run]}\n"
    )

    assert spec.env == {"A": "1", "B": "3"}  # a merged key may be overridden
    assert spec.security.tmpfs == ["/tmp", "/run"]


def test_more_than_100_aliases_are_refused() -> None:
    text = HEAD + "x: &x 1\ncommand: [" + ", ".join(["*x"] * 101) + "]\n"

    assert _problems(text) == ["line 4, column 10: more than 100 aliases (*name)"]


def test_an_alias_inside_the_node_it_names_is_refused() -> None:
    assert _problems(HEAD + "command: &loop [sleep, *loop]\n") == [
        "line 3, column 10: an alias refers to a node that contains it (a recursive document)"
    ]


def test_nesting_deeper_than_50_is_refused_also_through_an_alias() -> None:
    deep = HEAD + "env: " + "[" * 51 + "]" * 51 + "\n"
    assert _problems(deep) == ["line 3, column 55: nested more than 50 levels deep"]

    via_alias = HEAD + "x: &x " + "[" * 30 + "]" * 30 + "\nenv: " + "[" * 25 + "*x" + "]" * 25
    assert _problems(via_alias) == [
        "line 4, column 30: nested more than 50 levels deep (via an alias)"
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "app: web\nimage: x\napp: api\n",
            "line 3, column 1: the key 'app' is given twice (first on line 1); keys must be unique",
        ),
        (
            HEAD + "env:\n  A: '1'\n  A: '2'\n",
            "line 5, column 3: the key 'A' is given twice (first on line 4); keys must be unique",
        ),
        (
            HEAD + "deploy: {drain: 1s, drain: 2s}\n",
            "line 3, column 21: the key 'drain' is given twice (first on line 3); keys must be"
            " unique",
        ),
    ],
)
def test_a_key_given_twice_is_refused_instead_of_the_last_winning(text: str, problem: str) -> None:
    assert _problems(text) == [problem]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("9223372036854775808", "the integer 9223372036854775808 is beyond 64 bits"),
        ("-9223372036854775809", "the integer -9223372036854775809 is beyond 64 bits"),
        ("0x1_0000_0000_0000_0000", "the integer 18446744073709551616 is beyond 64 bits"),
        ("9" * 5000, "an integer beyond 64 bits"),
    ],
)
def test_integers_beyond_64_bits_are_refused_anywhere(value: str, problem: str) -> None:
    assert _problems(HEAD + f"instances: {value}\n") == [
        f"line 3, column 12: {problem} (-2^63 .. 2^63 - 1)"
    ]
    assert _problems(HEAD + f"x: {{y: [1, {value}]}}\n") == [
        f"line 3, column 12: {problem} (-2^63 .. 2^63 - 1)"
    ]


def test_the_largest_64_bit_integer_is_an_ordinary_number() -> None:
    problems = _problems(HEAD + "instances: 9223372036854775807\n")

    assert problems[0].startswith("instances: must be ≤")


def test_non_utf8_bytes_are_refused_with_their_position() -> None:
    assert _problems(b"app: web\nimage: caf\xe9\n") == [
        "not UTF-8 text: line 2, column 11 has a byte that is not UTF-8; save the file as UTF-8"
    ]
    # A str that came from undecodable bytes (surrogateescape) is refused the same way.
    assert _problems("app: web\nimage: caf\udce9\n")[0].startswith("not UTF-8 text: line 2")


def test_a_nul_character_is_refused_raw_or_escaped() -> None:
    assert _problems("app: web\x00\nimage: x\n") == [
        "line 1, column 9: a NUL character; a spec is text (YAML)"
    ]
    assert _problems(HEAD + 'env: {A: "a\\0b"}\n') == [
        "env.A: contains a NUL character, which no environment variable can hold"
    ]


def test_a_spec_larger_than_the_limit_is_refused_unread() -> None:
    big = HEAD + "# " + "x" * MAX_SPEC_BYTES + "\n"

    assert _problems(big) == [f"the spec is larger than 256 KiB ({len(big)} characters)"]
    assert _problems(big.encode()) == [f"the spec is larger than 256 KiB ({len(big)} bytes)"]
    multibyte = HEAD + "# " + "é" * (MAX_SPEC_BYTES // 2) + "\n"
    assert _problems(multibyte)[0].startswith("the spec is larger than 256 KiB (")


def test_a_spec_just_under_the_limit_is_parsed() -> None:
    text = HEAD + "# " + "x" * (MAX_SPEC_BYTES - len(HEAD) - 3) + "\n"
    assert len(text.encode()) == MAX_SPEC_BYTES

    assert parse_spec(text).app == "web"


@pytest.mark.parametrize(
    "text",
    [
        HEAD + "command: [" + "a," * 120_000 + "]\n",  # 240 KiB of one-letter values
        HEAD + "env:\n" + "".join(f"  V{i}: x\n" for i in range(20_000)),
        HEAD + "routes:\n" + "  - {path: /}\n" * 17_000,
    ],
)
def test_the_largest_texts_are_parsed_in_bounded_memory(text: str) -> None:
    assert len(text.encode()) <= MAX_SPEC_BYTES

    assert _peak_bytes(text) < 80_000_000


def test_yes_no_on_off_are_words_and_base_60_is_gone() -> None:
    spec = parse_spec(
        HEAD + "env: {COUNTRY: no, MODE: on, DEBUG: true, TIME: 1:30, USER: 1000:50}\n"
    )

    assert spec.env == {
        "COUNTRY": "no",
        "MODE": "on",
        "DEBUG": "true",
        "TIME": "1:30",
        "USER": "1000:50",
    }
    assert parse_spec(HEAD + "security: {read_only: no}\n").security.read_only is False


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("app: *" + "x" * 5000 + "\n", "not valid YAML at line 1, column 6: found undefined alias"),
        (HEAD + "image2: !!python/object:os.system x\n", "line 3, column 9: could not determine"),
        ("---\napp: a\n---\napp: b\n", "not valid YAML"),
    ],
)
def test_yaml_errors_are_one_short_line(text: str, problem: str) -> None:
    problems = _problems(text)

    assert len(problems) == 1 and problems[0].startswith(problem)
    assert len(problems[0]) <= 200


def test_a_long_value_is_echoed_cut_short() -> None:
    problems = _problems(HEAD + "instances: '" + "9" * 200_000 + "x'\n")

    assert problems[0].endswith("… (200001 characters)")
    assert len(problems[0]) < 250


def test_a_thousand_problems_are_listed_as_fifty_and_a_count() -> None:
    text = HEAD + "".join(f"unknown{i}: 1\n" for i in range(1000))

    problems = _problems(text)

    assert len(problems) == 51 and problems[-1] == "… and 950 more"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_any_input_is_a_spec_or_a_spec_invalid(data: str | bytes) -> None:
    try:
        parse_spec(data)
    except SpecInvalid as exc:
        assert exc.problems and all(len(p) < 400 for p in exc.problems)
