"""Events: append-only records of state changes, always with a reason a person can read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from kiln.model.app import AppKey


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, kw_only=True)
class Event:
    id: int
    at: datetime
    key: AppKey | None  # None for server-wide events (router, driver)
    kind: str  # dotted: "rollout.started", "instance.crashed", "router.config_rejected" ...
    reason: str
    severity: Severity = Severity.INFO
    release: int | None = None
    instance: str | None = None


@dataclass(frozen=True, kw_only=True)
class NewEvent:
    """An event before the store numbered it."""

    key: AppKey | None
    kind: str
    reason: str
    severity: Severity = Severity.INFO
    release: int | None = None
    instance: str | None = None
