"""Read views of promotions, approvals and diffs (plain frozen dataclasses, like ``views``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kiln.model import AppKey, Approval, Release, Rollout
from kiln.planning.promotion import Gate
from kiln.spec import FieldChange


@dataclass(frozen=True, kw_only=True)
class ReleaseRef:
    """One side of a diff: which release, and what it runs."""

    key: AppKey
    number: int | None  # None: not created yet (a promotion's dry run)
    image: str
    digest: str
    spec_hash: str


@dataclass(frozen=True, kw_only=True)
class DiffView:
    left: ReleaseRef
    right: ReleaseRef
    digest_changed: bool
    changes: list[FieldChange] = field(default_factory=list)
    # Secret versions of each side, once releases carry them: the same FieldChange shape
    # (path = the secret's name, before/after = its version). Empty until then.
    secrets: list[FieldChange] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.digest_changed and not self.changes and not self.secrets


@dataclass(frozen=True, kw_only=True)
class PromotionView:
    """``kiln promote APP --from A --to B``: the gates, what would change, what was done."""

    source: Release
    target: AppKey
    gates: list[Gate]
    diff: DiffView  # the target's current release (or nothing) → the promoted release
    dry_run: bool
    changed: bool  # a release was created (False: dry run, or the target already runs it)
    message: str
    release: Release | None = None  # the target's new release, or the identical one it runs
    rollout: Rollout | None = None

    @property
    def passed(self) -> bool:
        return all(gate.passed for gate in self.gates)


@dataclass(frozen=True, kw_only=True)
class ApprovalView:
    approval: Approval
    required: bool  # does the target environment require approvals at all
    message: str
