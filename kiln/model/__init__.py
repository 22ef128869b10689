"""kiln's vocabulary as frozen dataclasses: apps, releases, rollouts, instances, peers, events, actions.

The names below are loaded on first use (PEP 562 ``__getattr__``): ``from kiln.model import
AppKey`` loads only ``kiln.model.app``, not the release and rollout models that import the spec
models (pydantic) — the CLI's reads need only the key (kiln/cli/README.md, "Start-up"). Type
checkers read the imports under ``TYPE_CHECKING``; ``_HOMES`` says where each name lives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.lazy import lazy_exports

if TYPE_CHECKING:
    from kiln.model.actions import (
        Action,
        FinishRollout,
        RemoveInstance,
        ScaleGroup,
        SetPeers,
        StartInstance,
        StopInstance,
        UpdateRollout,
        Wait,
    )
    from kiln.model.app import AppKey, AppRecord
    from kiln.model.approval import Approval
    from kiln.model.event import (
        Event,
        EventKind,
        NewEvent,
        Severity,
        event_categories,
        kinds_matching,
    )
    from kiln.model.group import GroupRole, ReleaseGroup
    from kiln.model.instance import (
        LABEL_APP,
        LABEL_ENV,
        LABEL_INSTALLATION,
        LABEL_INSTANCE,
        LABEL_MANAGED,
        LABEL_RELEASE,
        Address,
        Instance,
        InstanceSpec,
        InstanceStatus,
        SecretRef,
        VolumeMount,
    )
    from kiln.model.observed import CrashHistory, HealthStatus, ObservedApp, ObservedInstance
    from kiln.model.release import Release, ReleaseOrigin
    from kiln.model.rollout import (
        AWAITS_PROMOTE,
        Rollout,
        RolloutKind,
        RolloutProgress,
        RolloutState,
    )
    from kiln.model.routing import Peer, ReleaseTraffic, RouteEntry, TrafficPolicy
    from kiln.model.secret import SealedSecret, SecretVersion
    from kiln.model.volume import Snapshot, VolumeInfo

_HOMES = {
    "kiln.model.actions": (
        "Action",
        "FinishRollout",
        "RemoveInstance",
        "ScaleGroup",
        "SetPeers",
        "StartInstance",
        "StopInstance",
        "UpdateRollout",
        "Wait",
    ),
    "kiln.model.app": ("AppKey", "AppRecord"),
    "kiln.model.approval": ("Approval",),
    "kiln.model.event": (
        "Event",
        "EventKind",
        "NewEvent",
        "Severity",
        "event_categories",
        "kinds_matching",
    ),
    "kiln.model.group": ("GroupRole", "ReleaseGroup"),
    "kiln.model.instance": (
        "LABEL_APP",
        "LABEL_ENV",
        "LABEL_INSTALLATION",
        "LABEL_INSTANCE",
        "LABEL_MANAGED",
        "LABEL_RELEASE",
        "Address",
        "Instance",
        "InstanceSpec",
        "InstanceStatus",
        "SecretRef",
        "VolumeMount",
    ),
    "kiln.model.observed": ("CrashHistory", "HealthStatus", "ObservedApp", "ObservedInstance"),
    "kiln.model.release": ("Release", "ReleaseOrigin"),
    "kiln.model.rollout": (
        "AWAITS_PROMOTE",
        "Rollout",
        "RolloutKind",
        "RolloutProgress",
        "RolloutState",
    ),
    "kiln.model.routing": ("Peer", "ReleaseTraffic", "RouteEntry", "TrafficPolicy"),
    "kiln.model.secret": ("SealedSecret", "SecretVersion"),
    "kiln.model.volume": ("Snapshot", "VolumeInfo"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "AWAITS_PROMOTE",
    "LABEL_APP",
    "LABEL_ENV",
    "LABEL_INSTALLATION",
    "LABEL_INSTANCE",
    "LABEL_MANAGED",
    "LABEL_RELEASE",
    "Action",
    "Address",
    "AppKey",
    "AppRecord",
    "Approval",
    "CrashHistory",
    "Event",
    "EventKind",
    "FinishRollout",
    "GroupRole",
    "HealthStatus",
    "Instance",
    "InstanceSpec",
    "InstanceStatus",
    "NewEvent",
    "ObservedApp",
    "ObservedInstance",
    "Peer",
    "Release",
    "ReleaseGroup",
    "ReleaseOrigin",
    "ReleaseTraffic",
    "RemoveInstance",
    "Rollout",
    "RolloutKind",
    "RolloutProgress",
    "RolloutState",
    "RouteEntry",
    "ScaleGroup",
    "SealedSecret",
    "SecretRef",
    "SecretVersion",
    "SetPeers",
    "Severity",
    "Snapshot",
    "StartInstance",
    "StopInstance",
    "TrafficPolicy",
    "UpdateRollout",
    "VolumeInfo",
    "VolumeMount",
    "Wait",
    "event_categories",
    "kinds_matching",
]


__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF, __all__)
