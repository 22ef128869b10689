"""Compose variable interpolation, as the Compose specification defines it. Pure.

    $VAR, ${VAR}          the value; unset → "" and a warning
    ${VAR:-default}       default when VAR is unset or empty    ${VAR-default}  … only when unset
    ${VAR:?message}       a problem when VAR is unset or empty  ${VAR?message}  … only when unset
    ${VAR:+replacement}   replacement when VAR is set and not empty, else ""  (${VAR+…}: when set)
    $$                    a literal $
    ${VAR:-${OTHER:-x}}   operands are interpolated themselves, and only when used

A ``$`` followed by anything that is not a name, ``{`` or ``$`` stays as it is. Anything else
inside braces (``${VAR/foo/bar}``, ``${}``) is a problem, as in Compose. Values are
interpolated, never mapping keys (the specification's rule).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from kiln.spec.problems import shown

_NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class InterpolationError(ValueError):
    """A ``${VAR:?message}`` whose variable is missing, or a braced form Compose does not know."""


@dataclass
class Interpolator:
    """Interpolates strings against ``variables``; remembers the unset ones it met."""

    variables: Mapping[str, str]
    unset: list[str] = field(default_factory=list)

    def __call__(self, text: str) -> str:
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            dollar = text.find("$", i)
            if dollar < 0:
                out.append(text[i:])
                break
            out.append(text[i:dollar])
            nxt = text[dollar + 1 : dollar + 2]
            if nxt == "$":
                out.append("$")
                i = dollar + 2
            elif nxt == "{":
                end = _closing_brace(text, dollar + 2)
                if end < 0:
                    raise InterpolationError(
                        f"{shown(text)}: ${{ is never closed; close it with }} or write $$ for a $"
                    )
                out.append(self._braced(text[dollar + 2 : end]))
                i = end + 1
            elif match := _NAME.match(text, dollar + 1):
                out.append(self._value(match.group()))
                i = match.end()
            else:
                out.append("$")
                i = dollar + 1
        return "".join(out)

    def _value(self, name: str) -> str:
        if name in self.variables:
            return self.variables[name]
        if name not in self.unset:
            self.unset.append(name)
        return ""

    def _braced(self, inner: str) -> str:
        match = _NAME.match(inner)
        if not match:
            raise InterpolationError(
                f"${{{shown(inner)[1:-1]}}} is not a variable: give a name of letters, digits and"
                " _ (write $$ for a literal $)"
            )
        name, rest = match.group(), inner[match.end() :]
        if not rest:
            return self._value(name)
        operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
        if operator is None:
            raise InterpolationError(
                f"${{{shown(inner)[1:-1]}}}: Compose knows only :-, -, :?, ?, :+ and + after a"
                " name (no other shell features)"
            )
        operand = rest[len(operator) :]
        value = self.variables.get(name)
        present = value is not None and (value != "" or not operator.startswith(":"))
        if operator in (":-", "-"):
            return value if present and value is not None else self(operand)
        if operator in (":+", "+"):
            return self(operand) if present else ""
        if present and value is not None:
            return value
        message = self(operand) or ("is empty or not set" if operator == ":?" else "is not set")
        raise InterpolationError(f"required variable {name}: {message}")


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` that closes the ``${`` opened just before ``start``; -1 if none."""
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1
