"""The typed HTTP client of the kiln API — the CLI's only way to the server."""

from kiln.client.client import KilnClient, read_token
from kiln.client.errors import ServerUnreachable
from kiln.client.models import (
    AppStatus,
    DeployResult,
    Event,
    Health,
    Instance,
    LogLine,
    Release,
    Rollout,
)

__all__ = [
    "AppStatus",
    "DeployResult",
    "Event",
    "Health",
    "Instance",
    "KilnClient",
    "LogLine",
    "Release",
    "Rollout",
    "ServerUnreachable",
    "read_token",
]
