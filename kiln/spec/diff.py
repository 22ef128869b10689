"""What differs between two specs, field by field. Pure.

Mappings are compared key by key down to their leaves (``env.LOG_LEVEL``,
``deploy.strategy``, ``resources.memory``); a list (``routes``, ``command``, ``deploy.steps``)
is one value, shown whole when it differs. Values are the JSON forms a release stores
(durations in seconds, sizes in bytes), so a diff reads the same as ``kiln releases --json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kiln.spec.model import AppSpec

MISSING: Any = None
"""A field one side does not have is shown as null."""


@dataclass(frozen=True, kw_only=True)
class FieldChange:
    path: str  # "deploy.strategy", "env.LOG_LEVEL"
    before: Any  # JSON value, None when the left side does not have it
    after: Any


def spec_changes(
    before: AppSpec, after: AppSpec, *, ignore: frozenset[str] = frozenset()
) -> list[FieldChange]:
    """Every leaf that differs, in a stable order (the model's field order, keys sorted below)."""
    left = before.model_dump(mode="json", exclude=set(ignore))
    right = after.model_dump(mode="json", exclude=set(ignore))
    changes: list[FieldChange] = []
    _walk("", left, right, changes)
    return changes


def _walk(path: str, left: Any, right: Any, out: list[FieldChange]) -> None:
    if left == right:
        return
    if isinstance(left, dict) and isinstance(right, dict):
        keys = list(left) + sorted(k for k in right if k not in left)
        if path:  # below the top level, keys in name order
            keys = sorted(set(left) | set(right))
        for key in keys:
            _walk(f"{path}.{key}" if path else str(key), left.get(key), right.get(key), out)
        return
    out.append(FieldChange(path=path, before=left, after=right))
