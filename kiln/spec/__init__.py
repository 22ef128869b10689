"""Specs: parse → fill defaults → validate (every problem at once). Pure: no I/O.

``grammar`` is the one definition of names, hosts and route paths (the router renders exactly
that language); ``limits`` names every bound on what a spec may ask; ``check_runnable`` holds
a spec against what a host can give.

The names below are loaded on first use (PEP 562 ``__getattr__``): ``from kiln.spec.grammar
import NAME_PATTERN`` (the CLI checks an ``APP`` argument with it) does not build every spec
model (kiln/cli/README.md, "Start-up"). Type checkers read the imports under ``TYPE_CHECKING``;
``_HOMES`` says where each name lives at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.lazy import lazy_exports

if TYPE_CHECKING:
    from kiln.spec.diff import FieldChange, spec_changes
    from kiln.spec.environments import base_for, for_environment
    from kiln.spec.limits import (
        MAX_COMMAND_ARGS,
        MAX_COMMAND_BYTES,
        MAX_ENV_BYTES,
        MAX_ENV_NAME_BYTES,
        MAX_ENV_VALUE_BYTES,
        MAX_INSTANCES,
        MAX_ROUTES,
        MAX_SPEC_BYTES,
    )
    from kiln.spec.model import (
        DEFAULT_CANARY_STEPS,
        Analysis,
        AppSpec,
        CanaryStep,
        Deploy,
        DriftAction,
        EnvironmentOverride,
        Health,
        Network,
        Probe,
        Resources,
        Route,
        Security,
        Strategy,
    )
    from kiln.spec.parse import parse_spec, spec_hash, spec_json_schema, validate_spec
    from kiln.spec.runnable import HostLimits, check_runnable
    from kiln.spec.stateful import MAX_SECRET_BYTES, SecretUse, Volume, secret_name_problem

_HOMES = {
    "kiln.spec.diff": ("FieldChange", "spec_changes"),
    "kiln.spec.environments": ("base_for", "for_environment"),
    "kiln.spec.limits": (
        "MAX_COMMAND_ARGS",
        "MAX_COMMAND_BYTES",
        "MAX_ENV_BYTES",
        "MAX_ENV_NAME_BYTES",
        "MAX_ENV_VALUE_BYTES",
        "MAX_INSTANCES",
        "MAX_ROUTES",
        "MAX_SPEC_BYTES",
    ),
    "kiln.spec.model": (
        "DEFAULT_CANARY_STEPS",
        "Analysis",
        "AppSpec",
        "CanaryStep",
        "Deploy",
        "DriftAction",
        "EnvironmentOverride",
        "Health",
        "Network",
        "Probe",
        "Resources",
        "Route",
        "Security",
        "Strategy",
    ),
    "kiln.spec.parse": ("parse_spec", "spec_hash", "spec_json_schema", "validate_spec"),
    "kiln.spec.runnable": ("HostLimits", "check_runnable"),
    "kiln.spec.stateful": ("MAX_SECRET_BYTES", "SecretUse", "Volume", "secret_name_problem"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "DEFAULT_CANARY_STEPS",
    "MAX_COMMAND_ARGS",
    "MAX_COMMAND_BYTES",
    "MAX_ENV_BYTES",
    "MAX_ENV_NAME_BYTES",
    "MAX_ENV_VALUE_BYTES",
    "MAX_INSTANCES",
    "MAX_ROUTES",
    "MAX_SECRET_BYTES",
    "MAX_SPEC_BYTES",
    "Analysis",
    "AppSpec",
    "CanaryStep",
    "Deploy",
    "DriftAction",
    "EnvironmentOverride",
    "FieldChange",
    "Health",
    "HostLimits",
    "Network",
    "Probe",
    "Resources",
    "Route",
    "SecretUse",
    "Security",
    "Strategy",
    "Volume",
    "base_for",
    "check_runnable",
    "for_environment",
    "parse_spec",
    "secret_name_problem",
    "spec_changes",
    "spec_hash",
    "spec_json_schema",
    "validate_spec",
]


__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF, __all__)
