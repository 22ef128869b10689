"""Human units in specs: durations (``"500ms"``, ``"2s"``, ``"1m30s"``) and sizes (``"128Mi"``).

Pure functions; each raises ``ValueError`` with a message that names the accepted forms, which
pydantic turns into a field problem.
"""

from __future__ import annotations

import math
import re

MAX_DURATION_SECONDS = 30 * 24 * 3600.0
"""Longer is never meant (``1e400`` or ``.inf``) and would overflow date arithmetic later."""

DURATION_PATTERN = r"^\s*(\d+(\.\d+)?(ms|s|m|h)?)+\s*$"
"""The string forms of a duration, for the JSON Schema (the parser below is the judge)."""

SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([KMGTkmgt]i?|[Bb])?\s*$"
"""The string forms of a size, for the JSON Schema."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

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
        return _bounded(float(value), value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 2s, 500ms or 1m, got {value!r}")
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
        raise ValueError(f"expected a duration like 2s, 500ms or 1m30s, got {given!r}")
    return total


def _bounded(seconds: float, given: object) -> float:
    # Negative durations are left to the field's ``ge=0`` so the message names the bound.
    if math.isnan(seconds) or seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"expected a duration of at most 30 days, got {given!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from a number or a string like ``"128Mi"``, ``"1G"``, ``"512k"``."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 128Mi or 1G, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a size like 128Mi or 1G, got {value!r}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a size like 128Mi or 1G, got {value!r}")
    match = _SIZE.match(value.strip())
    if not match:
        raise ValueError(f"expected a size like 128Mi, 512M or 1Gi, got {value!r}")
    number, unit = match.group(1), (match.group(2) or "").lower()
    size = float(number) * _SIZE_UNITS[unit]
    if not math.isfinite(size):
        raise ValueError(f"expected a size like 128Mi or 1G, got a number too large: {value!r}")
    return int(size)
