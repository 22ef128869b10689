"""Human units in specs: durations (``"500ms"``, ``"2s"``, ``"1m30s"``) and sizes (``"128Mi"``).

Pure functions; each raises ``ValueError`` with a message that names the accepted forms, which
pydantic turns into a field problem.
"""

from __future__ import annotations

import math
import re

from kiln.spec.problems import shown

MAX_DURATION_SECONDS = 30 * 24 * 3600.0
"""Longer is never meant (``1e400`` or ``.inf``) and would overflow date arithmetic later."""

DURATION_PATTERN = r"^\s*(\d+(\.\d+)?(ms|s|m|h)?)+\s*$"
"""The string forms of a duration, for the JSON Schema (the parser below is the judge)."""

SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([KMGTkmgt]i?|[Bb])?\s*$"
"""The string forms of a size, for the JSON Schema."""

PERCENT_PATTERN = r"^\s*\d+(\.\d+)?\s*%\s*$"
"""The string form of a share, for the JSON Schema: ``1%``, ``0.5%``."""

MAX_INT64 = 2**63 - 1
"""The largest size an engine takes (Docker's limits are signed 64-bit integers)."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]i?|[kmgt]i?|B|b)?$")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a string like ``"1m30s"``, ``"250ms"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 2s, 500ms or 1m, got a boolean")
    if isinstance(value, int | float):
        return _bounded(_float(value), value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 2s, 500ms or 1m, got {shown(value)}")
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = _sum_of_parts(text, value)
    return _bounded(seconds, value)


def _sum_of_parts(text: str, given: str) -> float:
    position = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise ValueError(f"expected a duration like 2s, 500ms or 1m30s, got {shown(given)}")
    return total


def _bounded(seconds: float, given: object) -> float:
    # Negative durations are left to the field's ``ge=0`` so the message names the bound.
    if math.isnan(seconds) or seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"expected a duration of at most 30 days, got {shown(given)}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from a number or a string like ``"128Mi"``, ``"1G"``, ``"512k"``."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 128Mi or 1G, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a size like 128Mi or 1G, got {shown(value)}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a size like 128Mi or 1G, got {shown(value)}")
    match = _SIZE.match(value.strip())
    if not match:
        raise ValueError(f"expected a size like 128Mi, 512M or 1Gi, got {shown(value)}")
    number, unit = match.group(1), (match.group(2) or "").lower()
    size = float(number) * _SIZE_UNITS[unit]
    if not math.isfinite(size):
        raise ValueError(
            f"expected a size like 128Mi or 1G, got a number too large: {shown(value)}"
        )
    return int(size)


def parse_fraction(value: object) -> float:
    """A share as a fraction 0..1, from ``"1%"``, ``"0.5%"`` or a number like ``0.01``."""
    if isinstance(value, bool):
        raise ValueError("expected a share like 1% or 0.01, got a boolean")
    if isinstance(value, int | float):
        fraction = _float(value)
    elif isinstance(value, str):
        match = _PERCENT.match(value.strip())
        if not match:
            raise ValueError(f"expected a share like 1% or 0.01, got {shown(value)}")
        fraction = float(match.group(1)) / 100
    else:
        raise ValueError(f"expected a share like 1% or 0.01, got {shown(value)}")
    if not 0 <= fraction <= 1:  # also refuses NaN
        hint = (
            f" (write {value:g}% for {value:g} percent)" if isinstance(value, int | float) else ""
        )
        raise ValueError(f"must be between 0% and 100% (a fraction 0..1){hint}, got {shown(value)}")
    return fraction


def _float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int beyond any float: no duration or share is meant
        raise ValueError(f"expected a number of a sensible size, got {shown(value)}") from None
