"""Placement for orchestrators: a round's per-instance actions as release-group targets. Pure.

kiln plans instance by instance (which to start, which to drain and stop). A Docker engine
takes those actions as they are; an orchestrator (Swarm, Kubernetes) places and restarts
containers itself and takes "release N should have k replicas, retire these first". This module
turns one into the other, so both kinds of driver follow the same plan:

    replicas(N) = running instances of N - those stopped this round + those started this round
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from kiln.model import (
    Action,
    AppKey,
    ObservedApp,
    ReleaseGroup,
    ScaleGroup,
    StartInstance,
    StopInstance,
)
from kiln.planning.instances import instance_spec


def group_targets(
    key: AppKey,
    actions: Sequence[Action],
    observed: ObservedApp,
    groups: Sequence[ReleaseGroup],
) -> tuple[ScaleGroup, ...]:
    """One ``ScaleGroup`` per release that runs or should run; releases in no group go to 0."""
    running = Counter(i.release for i in observed.instances if i.instance.running)
    started: Counter[int] = Counter()
    stopped: defaultdict[int, list[str]] = defaultdict(list)
    reasons: dict[int, str] = {}
    for action in actions:
        if isinstance(action, StartInstance):
            started[action.spec.release] += 1
            reasons.setdefault(action.spec.release, action.reason)
        elif isinstance(action, StopInstance):
            stopped[action.release].append(action.instance_id)
            reasons.setdefault(action.release, action.reason)
    by_number = {g.number: g for g in groups}
    targets: list[ScaleGroup] = []
    for number in sorted(set(running) | set(started) | set(by_number)):
        group = by_number.get(number)
        replicas = running[number] - len(stopped[number]) + started[number]
        targets.append(
            ScaleGroup(
                key=key,
                release=number,
                template=None
                if group is None
                else instance_spec(group.release, f"r{number}-template"),
                replicas=max(0, replicas),
                retire_first=tuple(sorted(stopped[number])),
                reason=reasons.get(
                    number,
                    f"release {number} ({group.role.value})"
                    if group
                    else f"release {number} is no longer wanted",
                ),
            )
        )
    return tuple(targets)
