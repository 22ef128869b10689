"""The typed HTTP client of the kiln API — the CLI's only way to the server."""

from kiln.client.client import Endpoint, KilnClient, read_token
from kiln.client.errors import NotThisKiln, ServerUnreachable, UntrustedCertificate
from kiln.client.models import (
    AppStatus,
    DeployResult,
    DriftFinding,
    DriftReport,
    Event,
    Group,
    Health,
    Identity,
    Instance,
    LogLine,
    Release,
    ReleaseTraffic,
    Rollout,
    RolloutView,
)
from kiln.client.promotion_models import Approval, Diff, FieldChange, Gate, Promotion

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
