"""kiln's vocabulary as frozen dataclasses: apps, releases, rollouts, instances, peers, events, actions."""

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
from kiln.model.event import Event, EventKind, NewEvent, Severity, event_categories, kinds_matching
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
from kiln.model.rollout import AWAITS_PROMOTE, Rollout, RolloutKind, RolloutProgress, RolloutState
from kiln.model.routing import Peer, ReleaseTraffic, RouteEntry, TrafficPolicy
from kiln.model.secret import SealedSecret, SecretVersion
from kiln.model.volume import Snapshot, VolumeInfo

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
