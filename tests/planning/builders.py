"""Small builders of planner inputs, so each test states only what its scenario is about."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from kiln.model import (
    Address,
    AppKey,
    CrashHistory,
    HealthStatus,
    Instance,
    InstanceStatus,
    ObservedApp,
    ObservedInstance,
    Peer,
    Release,
    Rollout,
    RolloutState,
)
from kiln.planning import DesiredApp, Plan
from kiln.spec import Strategy, spec_hash, validate_spec

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
KEY = AppKey("dev", "web")

A = TypeVar("A")


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def make_release(
    number: int,
    *,
    key: AppKey = KEY,
    instances: int = 3,
    strategy: Strategy = Strategy.ROLLING,
    max_surge: int = 1,
    max_unavailable: int = 0,
    drain: float = 2.0,
    deadline: float = 60.0,
    port: int | None = 8080,
    deploy: dict[str, Any] | None = None,
    **spec_fields: Any,
) -> Release:
    """Release ``number`` of ``key``; its digest differs per release so tests can tell them apart."""
    spec = validate_spec(
        {
            "app": key.app,
            "environment": key.environment,
            "image": f"registry.local/web:v{number}",
            "port": port,
            "instances": instances,
            "deploy": {
                "strategy": strategy,
                "max_surge": max_surge,
                "max_unavailable": max_unavailable,
                "drain": drain,
                "deadline": deadline,
                **(deploy or {}),
            },
            **spec_fields,
        }
    )
    return Release(
        key=key,
        number=number,
        image=spec.image,
        digest="sha256:" + f"{number:02d}" * 32,
        spec=spec,
        spec_hash=spec_hash(spec),
        created_at=T0,
        created_by="test",
        message=f"release {number}",
    )


def make_rollout(
    to: Release,
    *,
    from_release: Release | None = None,
    started_at: datetime = T0,
    rollout_id: int = 1,
) -> Rollout:
    return Rollout(
        id=rollout_id,
        key=to.key,
        from_release=from_release.number if from_release else None,
        to_release=to.number,
        strategy=to.spec.deploy.strategy,
        state=RolloutState.IN_PROGRESS,
        started_at=started_at,
        deadline_at=started_at + seconds(to.spec.deploy.deadline),
    )


def steady(release: Release, *, scale: int | None = None) -> DesiredApp:
    """The app settled on ``release``: target and stable, no rollout."""
    return DesiredApp(
        key=release.key,
        scale=release.spec.instances if scale is None else scale,
        stopped=False,
        target=release,
        stable=release,
        rollout=None,
    )


def deploying(
    to: Release, *, from_release: Release | None = None, started_at: datetime = T0
) -> DesiredApp:
    """A rollout from ``from_release`` (the stable one) to ``to`` in progress."""
    return DesiredApp(
        key=to.key,
        scale=to.spec.instances,
        stopped=False,
        target=to,
        stable=from_release,
        rollout=make_rollout(to, from_release=from_release, started_at=started_at),
    )


def instance(
    release: int,
    n: int,
    *,
    ready: bool = True,
    in_router: bool | None = None,
    live: bool = True,
    status: InstanceStatus = InstanceStatus.RUNNING,
    started_at: datetime | None = None,
    retiring_since: datetime | None = None,
    last_error: str | None = None,
    exit_code: int | None = None,
    key: AppKey = KEY,
) -> ObservedInstance:
    """Instance ``r<release>-<n>``; by default running, ready and (so) in the router."""
    instance_id = f"r{release}-{n:06d}"
    running = status is InstanceStatus.RUNNING
    return ObservedInstance(
        instance=Instance(
            id=instance_id,
            key=key,
            release=release,
            container_id=f"c-{instance_id}",
            status=status,
            address=Address("127.0.0.1", 20000 + release * 100 + n),
            started_at=started_at or T0 - seconds(3600 - release * 60 - n),
            exit_code=exit_code,
        ),
        health=HealthStatus(
            ready=ready and running,
            live=live,
            checked=True,
            last_error=last_error,
            ready_since=T0 - seconds(60) if ready else None,
        ),
        in_router=(ready and running) if in_router is None else in_router,
        retiring_since=retiring_since,
    )


def peer_of(observed: ObservedInstance) -> Peer:
    address = observed.instance.address
    assert address is not None
    return Peer(
        instance_id=observed.id, host=address.host, port=address.port, release=observed.release
    )


def observe(*instances: ObservedInstance, crashes: CrashHistory | None = None) -> ObservedApp:
    """What the controller would hand over: the router holds exactly the ``in_router`` ones."""
    return ObservedApp(
        instances=tuple(instances),
        routed=frozenset(peer_of(i) for i in instances if i.in_router),
        crashes=crashes or CrashHistory(),
    )


def of_type(plan: Plan, kind: type[A]) -> list[A]:
    return [a for a in plan.actions if isinstance(a, kind)]


def kinds(plan: Plan) -> list[str]:
    return [type(a).__name__ for a in plan.actions]


def ids(actions: list[Any]) -> set[str]:
    return {a.instance_id for a in actions}


def with_health(observed: ObservedInstance, **health: Any) -> ObservedInstance:
    return replace(observed, health=replace(observed.health, **health))
