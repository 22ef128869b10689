"""What a strategy decides: which instances stay, which retire (and why), how many to start."""

from __future__ import annotations

from dataclasses import dataclass, field

from kiln.model import ObservedInstance


@dataclass(frozen=True, kw_only=True)
class Selection:
    keep: tuple[ObservedInstance, ...]
    retire: dict[str, str] = field(default_factory=dict)  # instance id → reason
    start: int = 0
    waiting_for: str = ""  # why nothing more happens this round, for the status line


def by_age(instance: ObservedInstance) -> tuple[bool, str]:
    """Oldest first; an instance that never started sorts last."""
    started = instance.instance.started_at
    return (started is None, started.isoformat() if started else "")
