"""Recreate: stop every instance of other releases first, then start the target's instances.

Simple and with downtime; for apps that cannot run two releases side by side (a schema
migration, a singleton consumer).
"""

from __future__ import annotations

from collections.abc import Sequence

from kiln.model import ObservedInstance
from kiln.planning.selection import Selection, by_age


def select_recreate(
    alive: Sequence[ObservedInstance], *, target: int | None, wanted: int, stopping: int = 0
) -> Selection:
    """``stopping``: instances of other releases already retiring (or failing liveness) that
    still run. They are not ``alive`` any more, but the new release must wait for them too."""
    retire: dict[str, str] = {}
    new = sorted(
        (i for i in alive if i.release == target), key=lambda i: (not i.health.ready, *by_age(i))
    )
    old = [i for i in alive if i.release != target]
    for instance in old:
        retire[instance.id] = (
            f"recreate: stopping before release {target} starts" if target else "app stopped"
        )
    keep = new[:wanted]
    for extra in new[wanted:]:
        retire[extra.id] = f"scaling down to {wanted}"
    if old or stopping:
        return Selection(
            keep=tuple(keep),
            retire=retire,
            start=0,
            waiting_for=f"waiting for {len(old) + stopping} old instance(s) to stop",
        )
    return Selection(keep=tuple(keep), retire=retire, start=max(0, wanted - len(keep)))
