"""Specs: parse → fill defaults → validate (every problem at once). Pure: no I/O.

``grammar`` is the one definition of names, hosts and route paths (the router renders exactly
that language); ``limits`` names every bound on what a spec may ask.
"""

from kiln.spec.limits import MAX_SPEC_BYTES
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
    "MAX_SPEC_BYTES",
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
