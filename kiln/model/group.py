"""Release groups: one release of one app as the planner sees it.

The desired state of an app is a set of groups, each a release with a role, a size (how many
instances it should have), a share of the app's traffic and whether its routes are live. The
rollout machine (``kiln.planning.rollout``) turns an app's releases and rollout into groups; the
reconcile planner turns groups into instances, peers, routes and a traffic policy. On Docker a
group's instances are containers kiln starts and stops one by one; an orchestrator driver would
carry a group out as one service or Deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kiln.model.release import Release


class GroupRole(StrEnum):
    STABLE = "stable"  # the release traffic rests on
    NEXT = "next"  # a rolling or recreate rollout's new release (shares one pool with stable)
    CANARY = "canary"  # a canary's new release, on an exact share of the traffic
    GREEN = "green"  # a blue-green's new release: full size, preview only until promoted
    WARM = "warm"  # the previous release inside its rollback window: up, routable, no traffic
    HELD = "held"  # a failed or aborted release kept for inspection: no traffic, not replaced


@dataclass(frozen=True, kw_only=True)
class ReleaseGroup:
    """``size``: instances wanted (``None``: keep those that run, start none — a held release).
    ``share``: percent of the app's requests (``None``: one pool with the other ``None`` groups,
    by instance — a rolling update). ``routable``: its ready instances are peers in the router
    (a warm release takes no traffic but must be one policy switch away from taking it all).
    ``preview``: reachable through the preview header and host before it takes traffic."""

    release: Release
    role: GroupRole
    size: int | None
    share: int | None
    routable: bool = True
    preview: bool = False

    @property
    def number(self) -> int:
        return self.release.number
