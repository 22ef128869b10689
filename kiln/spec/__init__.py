"""Specs: parse → fill defaults → validate (every problem at once). Pure: no I/O."""

from kiln.spec.model import (
    AppSpec,
    Deploy,
    Health,
    Network,
    Probe,
    Resources,
    Route,
    Security,
    Strategy,
)
from kiln.spec.parse import parse_spec, spec_hash, spec_json_schema, validate_spec

__all__ = [
    "AppSpec",
    "Deploy",
    "Health",
    "Network",
    "Probe",
    "Resources",
    "Route",
    "Security",
    "Strategy",
    "parse_spec",
    "spec_hash",
    "spec_json_schema",
    "validate_spec",
]
