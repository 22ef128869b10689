"""The typed HTTP client of the kiln API — the CLI's only way to the server.

The names below are loaded on first use (PEP 562 ``__getattr__``): ``from kiln.client import
ServerUnreachable`` costs only ``kiln.client.errors``, not httpx and the pydantic answer models,
so the CLI starts quickly (kiln/cli/README.md, "Start-up"). Type checkers read the imports
under ``TYPE_CHECKING``; ``_HOMES`` says where each name lives at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.lazy import lazy_exports

if TYPE_CHECKING:
    from kiln.client.client import Endpoint, KilnClient, read_token
    from kiln.client.command_models import (
        DeployResult,
        DriftFinding,
        DriftReport,
        Group,
        ReleaseTraffic,
        RolloutView,
    )
    from kiln.client.errors import NotThisKiln, ServerUnreachable, UntrustedCertificate
    from kiln.client.models import (
        AppStatus,
        Event,
        Health,
        Identity,
        Instance,
        LogLine,
        Release,
        Rollout,
    )
    from kiln.client.promotion_models import Approval, Diff, FieldChange, Gate, Promotion

_HOMES = {
    "kiln.client.client": ("Endpoint", "KilnClient", "read_token"),
    "kiln.client.errors": ("NotThisKiln", "ServerUnreachable", "UntrustedCertificate"),
    "kiln.client.command_models": (
        "DeployResult",
        "DriftFinding",
        "DriftReport",
        "Group",
        "ReleaseTraffic",
        "RolloutView",
    ),
    "kiln.client.models": (
        "AppStatus",
        "Event",
        "Health",
        "Identity",
        "Instance",
        "LogLine",
        "Release",
        "Rollout",
    ),
    "kiln.client.promotion_models": ("Approval", "Diff", "FieldChange", "Gate", "Promotion"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "AppStatus",
    "Approval",
    "DeployResult",
    "Diff",
    "DriftFinding",
    "DriftReport",
    "Endpoint",
    "Event",
    "FieldChange",
    "Gate",
    "Group",
    "Health",
    "Identity",
    "Instance",
    "KilnClient",
    "LogLine",
    "NotThisKiln",
    "Promotion",
    "Release",
    "ReleaseTraffic",
    "Rollout",
    "RolloutView",
    "ServerUnreachable",
    "UntrustedCertificate",
    "read_token",
]


__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF, __all__)
