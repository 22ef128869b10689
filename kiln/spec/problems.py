"""How spec problems are worded: values echoed in short, several problems from one check.

Every message that repeats what the user gave goes through ``shown``, so a 200 KiB value in a
spec never comes back 200 KiB long in an error, a log line or an API answer.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from typing import NoReturn

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

SHOWN_CHARACTERS = 80
"""A value echoed in an error message is cut to about this many characters."""

PROBLEM = "kiln_problem"
"""The pydantic error type of a problem found by one of kiln's checks (see ``raise_problems``)."""

Loc = tuple[str | int, ...]


def shown(value: object) -> str:
    """``repr(value)``, cut to about 80 characters: errors never echo unbounded input.

    Never builds the whole repr of a big value (nor fails on an integer Python will not print).
    """
    if isinstance(value, str | bytes):
        text = repr(value[: SHOWN_CHARACTERS + 1])
        size = f" ({len(value)} characters)" if len(value) > SHOWN_CHARACTERS else ""
    else:
        try:
            text = _SHORT.repr(value)
        except ValueError:  # an int beyond sys.get_int_max_str_digits()
            text = "a number too large to show"
        size = ""
    if len(text) <= SHOWN_CHARACTERS and not size:
        return text
    return text[: SHOWN_CHARACTERS - 1] + "…" + size


_SHORT = reprlib.Repr()
_SHORT.maxlevel = 3
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxdict = 12
_SHORT.maxstring = _SHORT.maxlong = _SHORT.maxother = SHOWN_CHARACTERS


def raise_problems(title: str, problems: Sequence[tuple[Loc, str]]) -> NoReturn:
    """Raise every problem at once, each at its own field path relative to the model checked.

    pydantic merges a ``ValidationError`` raised inside a validator into the outer one, with
    the validator's location in front, so ``(("steps", 1, "weight"), "…")`` raised while
    checking ``deploy`` reads ``deploy.steps.1.weight: …``.
    """
    details = [
        InitErrorDetails(
            type=PydanticCustomError(PROBLEM, "{message}", {"message": message}),
            loc=loc,
            input=None,
        )
        for loc, message in problems
    ]
    raise ValidationError.from_exception_data(title, details)
