"""Durations and sizes as people write them."""

from __future__ import annotations

import pytest

from kiln.spec.units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (2, 2.0),
        (0.25, 0.25),
        ("2", 2.0),
        ("1.5", 1.5),
        ("2s", 2.0),
        ("500ms", 0.5),
        ("1m", 60.0),
        ("1m30s", 90.0),
        ("1h2m3s", 3723.0),
        ("1.5h", 5400.0),
        (" 10s ", 10.0),
        ("720h", 2_592_000.0),
    ],
)
def test_duration_forms(given: object, seconds: float) -> None:
    assert parse_duration(given) == seconds


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("soon", "expected a duration like 2s, 500ms or 1m30s, got 'soon'"),
        ("", "expected a duration like 2s, 500ms or 1m30s, got ''"),
        ("2 s", "expected a duration like 2s, 500ms or 1m30s, got '2 s'"),
        ("2d", "expected a duration like 2s, 500ms or 1m30s, got '2d'"),
        ("s", "expected a duration like 2s, 500ms or 1m30s, got 's'"),
        (True, "expected a duration like 2s, 500ms or 1m, got a boolean"),
        ([2], "expected a duration like 2s, 500ms or 1m, got [2]"),
        ("inf", "expected a duration of at most 30 days, got 'inf'"),
        ("nan", "expected a duration of at most 30 days, got 'nan'"),
        (float("nan"), "expected a duration of at most 30 days, got nan"),
        ("721h", "expected a duration of at most 30 days, got '721h'"),
        (10**12, "expected a duration of at most 30 days, got 1000000000000"),
    ],
)
def test_bad_durations_name_the_accepted_forms(given: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(given)

    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("given", "size"),
    [
        (1024, 1024),
        ("1024", 1024),
        ("512k", 512_000),
        ("512K", 512_000),
        ("128Mi", 128 * 1024**2),
        ("128mi", 128 * 1024**2),
        ("1G", 10**9),
        ("1.5Gi", 1536 * 1024**2),
        ("2Ti", 2 * 1024**4),
        ("64 Mi", 64 * 1024**2),
        ("100b", 100),
        (2048.0, 2048),
    ],
)
def test_size_forms(given: object, size: int) -> None:
    assert parse_size(given) == size


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("lots", "expected a size like 128Mi, 512M or 1Gi, got 'lots'"),
        ("128MiB", "expected a size like 128Mi, 512M or 1Gi, got '128MiB'"),
        ("-1Mi", "expected a size like 128Mi, 512M or 1Gi, got '-1Mi'"),
        (False, "expected a size like 128Mi or 1G, got a boolean"),
        (float("inf"), "expected a size like 128Mi or 1G, got inf"),
        (None, "expected a size like 128Mi or 1G, got None"),
    ],
)
def test_bad_sizes_name_the_accepted_forms(given: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_size(given)

    assert str(caught.value) == message


def test_size_too_large_for_a_float_is_a_problem_not_a_crash() -> None:
    with pytest.raises(ValueError, match="a number too large"):
        parse_size("9" * 400 + "Gi")
