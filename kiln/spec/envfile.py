"""Environment files (Compose's ``env_file`` and a project's ``.env``), as Compose reads them. Pure.

- one ``NAME=value`` a line (``export NAME=value`` too); blank lines and lines starting with
  ``#`` are skipped; ``NAME`` alone takes NAME from ``variables`` (left out when unset there);
- unquoted values end at `` #`` (a comment needs a space before it) and are interpolated;
- ``"double quoted"`` values may span lines, know ``\\n \\r \\t \\\\ \\"`` and are interpolated;
- ``'single quoted'`` values are literal (``\\'`` is a quote).

``parse_env_file`` raises ``EnvFileError`` naming the line of the first problem.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from kiln.spec.interpolate import InterpolationError, Interpolator

_LINE = re.compile(r"\s*(?:export\s+)?([^=\s#][^=\s]*)\s*(?:=(.*))?", re.DOTALL)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$"}


class EnvFileError(ValueError):
    """The file is not an environment file; the message names the line."""


def parse_env_file(text: str, variables: Mapping[str, str]) -> dict[str, str]:
    """``{NAME: value}`` in file order; values interpolated against ``variables``."""
    interpolate = Interpolator(variables)
    result: dict[str, str] = {}
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if not match:
            raise EnvFileError(f"line {number}: expected NAME=value, got {line.strip()[:60]!r}")
        name, raw = match.group(1), match.group(2)
        if raw is None:
            if name in variables:
                result[name] = variables[name]
            continue
        raw = raw.lstrip()
        first = number
        try:
            if raw.startswith('"'):
                # A double-quoted value may go on over the next lines until its closing quote.
                while (value := _double_quoted(raw[1:])) is None:
                    if number >= len(lines):
                        raise EnvFileError(f'line {first}: the " is never closed')
                    raw += "\n" + lines[number]
                    number += 1
                result[name] = interpolate(value)
            elif raw.startswith("'"):
                end = _closing_single(raw)
                if end < 0:
                    raise EnvFileError(f"line {first}: the ' is never closed")
                result[name] = raw[1:end].replace("\\'", "'")
            else:
                comment = re.search(r"\s#", raw)
                result[name] = interpolate((raw[: comment.start()] if comment else raw).rstrip())
        except InterpolationError as exc:
            raise EnvFileError(f"line {first}: {exc}") from None
    return result


def _double_quoted(body: str) -> str | None:
    """The value up to the closing quote, escapes applied; None when there is none yet."""
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            # An unknown escape stays as written; \$ stays escaped for the interpolation.
            out.append("$$" if nxt == "$" else _ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        if char == '"':
            return "".join(out)
        out.append(char)
        i += 1
    return None


def _closing_single(raw: str) -> int:
    i = 1
    while i < len(raw):
        if raw[i] == "\\" and raw[i + 1 : i + 2] == "'":
            i += 2
            continue
        if raw[i] == "'":
            return i
        i += 1
    return -1
