"""A gate refusal travels as `gate_refused` over the API, is raised as GateRefused by the client
and ends the CLI with exit 8 (a conflict of another kind stays 7)."""

from __future__ import annotations

from kiln.cli.exit_codes import ExitCode, exit_code_for
from kiln.client.errors import error_from_body
from kiln.errors import Conflict, GateRefused


def test_a_gate_refusal_is_exit_8_and_other_conflicts_stay_7() -> None:
    body = {
        "error": {
            "type": "gate_refused",
            "message": "staging/web release 4 cannot be promoted to production; nothing changed:"
            "\n  - soak: live and healthy 4m10s of the 10m production requires",
            "problems": [],
        }
    }
    error = error_from_body(409, body)
    assert isinstance(error, GateRefused)
    assert "soak: live and healthy 4m10s" in error.message
    assert exit_code_for(error) is ExitCode.GATE_REFUSED == 8
    assert exit_code_for(Conflict("nothing to roll back to")) is ExitCode.CONFLICT
