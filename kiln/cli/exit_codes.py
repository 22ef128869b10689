"""The CLI's exit codes, and the one mapping from errors to them."""

from __future__ import annotations

from enum import IntEnum

from kiln.client import ServerUnreachable
from kiln.errors import Conflict, GateRefused, InvalidInput, NotFound, Unauthorized


class ExitCode(IntEnum):
    OK = 0
    UNEXPECTED = 1
    BAD_INPUT = 2  # invalid spec, bad flag, refused confirmation
    ROLLOUT_FAILED = (
        3  # the rollout failed or was aborted; the app went back to its previous release
    )
    NOT_FOUND = 4
    UNREACHABLE = 5  # the kiln server is not running (or not where KILN_API_* says)
    UNAUTHORIZED = 6
    CONFLICT = 7
    GATE_REFUSED = (
        8  # a promotion gate (soak, rollout, analysis, approval) refused; nothing changed
    )


EPILOG = (
    "Exit codes: 0 ok · 1 unexpected error · 2 bad input (invalid spec, bad flag, refused "
    "confirmation) · 3 rollout failed or aborted (rolled back) · 4 not found · 5 kiln server not "
    "reachable · 6 unauthorized · 7 conflict · 8 promotion refused by a gate. Set KILN_DEBUG=1 for tracebacks."
)

_BY_ERROR: tuple[tuple[type[Exception], ExitCode], ...] = (
    (ServerUnreachable, ExitCode.UNREACHABLE),
    (InvalidInput, ExitCode.BAD_INPUT),
    (NotFound, ExitCode.NOT_FOUND),
    (Unauthorized, ExitCode.UNAUTHORIZED),
    (GateRefused, ExitCode.GATE_REFUSED),
    (Conflict, ExitCode.CONFLICT),
)


def exit_code_for(exc: Exception) -> ExitCode:
    for cls, code in _BY_ERROR:
        if isinstance(exc, cls):
            return code
    return ExitCode.UNEXPECTED
