"""Rolling update: replace instances a few at a time, never below ``wanted - max_unavailable`` ready.

One round, given the live instances of the app (crashed and unhealthy ones already removed):

    new = instances of the target release        old = every other live instance
    1. keep at most ``wanted`` new ones (ready ones first)   → the rest retire (scale down)
    2. old ones that are not ready carry no traffic           → retire
    3. retire ready old ones while ready(new) + ready(old) stays ≥ wanted - max_unavailable
    4. start new ones while new < wanted and kept instances < wanted + max_surge

Retiring instances do not count against ``max_surge``: they are already out of the router and
only draining, so the next new instance can start at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from kiln.model import ObservedInstance
from kiln.planning.selection import Selection, by_age


def select_rolling(
    alive: Sequence[ObservedInstance],
    *,
    target: int | None,
    stable: int | None,
    wanted: int,
    max_surge: int,
    max_unavailable: int,
) -> Selection:
    retire: dict[str, str] = {}
    new = [i for i in alive if i.release == target]
    old = [i for i in alive if i.release != target]

    new_sorted = sorted(new, key=lambda i: (not i.health.ready, *by_age(i)))
    keep_new = new_sorted[:wanted]
    for extra in new_sorted[wanted:]:
        retire[extra.id] = f"scaling down to {wanted}"

    replaced_by = f"replaced by release {target}" if target is not None else "app stopped"
    old_ready: list[ObservedInstance] = []
    for instance in old:
        if instance.health.ready and wanted > 0:
            old_ready.append(instance)
        else:
            retire[instance.id] = replaced_by

    # Retire instances of releases other than the stable one first (a superseded rollout),
    # then the oldest: the stable release keeps capacity longest (no cliff on rollback).
    old_ready.sort(key=lambda i: (i.release == stable, *by_age(i)))
    ready_now = sum(1 for i in keep_new if i.health.ready) + len(old_ready)
    floor = max(wanted - max_unavailable, 0)
    can_retire = max(0, ready_now - floor)
    for instance in old_ready[:can_retire]:
        retire[instance.id] = replaced_by
    kept_old = old_ready[can_retire:]

    room = wanted + max_surge - (len(keep_new) + len(kept_old))
    start = max(0, min(wanted - len(keep_new), room))

    waiting_for = ""
    if kept_old and start == 0:
        not_ready = sum(1 for i in keep_new if not i.health.ready)
        waiting_for = (
            f"waiting for {not_ready} new instance(s) of release {target} to pass readiness"
        )
    return Selection(
        keep=(*keep_new, *kept_old), retire=retire, start=start, waiting_for=waiting_for
    )
