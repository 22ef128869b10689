"""Never two writers on a volume that is not shared.

An app whose release mounts a volume with ``shared: false`` runs at most one instance at a
time, of one release: whatever its spec's strategy, it is planned as ``recreate`` (the old
instance stops before the new one starts), with no warm or held release kept running beside
it, and at most one instance. The spec refuses canary, blue-green and ``instances > 1`` for
such an app already; this is the planner's own guarantee (a stored release, a ``kiln scale``),
checked round by round in the planner's properties.
"""

from __future__ import annotations

import dataclasses

from kiln.model import Release
from kiln.planning.inputs import DesiredApp
from kiln.spec import Strategy


def has_single_writer(release: Release | None) -> bool:
    return release is not None and release.spec.single_writer()


def one_writer(desired: DesiredApp) -> DesiredApp:
    """``desired`` as the planner must see it when a release has a volume that is not shared."""
    if not (has_single_writer(desired.target) or has_single_writer(desired.stable)):
        return desired
    rollout = desired.rollout
    if rollout is not None and rollout.strategy is not Strategy.RECREATE:
        rollout = dataclasses.replace(rollout, strategy=Strategy.RECREATE)
    return dataclasses.replace(
        desired,
        scale=min(desired.scale, 1),
        target=_recreate(desired.target),
        stable=_recreate(desired.stable),
        rollout=rollout,
        warm=None,
        warm_until=None,
        held=None,
    )


def _recreate(release: Release | None) -> Release | None:
    if release is None or release.spec.deploy.strategy is Strategy.RECREATE:
        return release
    deploy = release.spec.deploy.model_copy(
        update={
            "strategy": Strategy.RECREATE,
            "steps": None,
            "analysis": None,
            "canary_instances": None,
            "auto_promote_after": None,
        }
    )
    return dataclasses.replace(release, spec=release.spec.model_copy(update={"deploy": deploy}))
