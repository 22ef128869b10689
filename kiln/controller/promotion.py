"""Environments and promotion: ``promote``, ``approve`` and the diffs.

A promotion makes a release in the next environment with *exactly* the source release's
image reference and digest, and its base spec (the spec as written, before any environment's
overrides) with the target environment's overrides applied. Then it is an ordinary release:
the target's strategy rolls it out (a canary there is a canary), through ``commands``.

```
promote(web, staging → production)
  order ok? (settings: environments.order; one step at a time) ─ no ─▶ InvalidInput
  source = staging/web's serving release (or --release N)
  spec   = for_environment(source.base, production)
  production already runs source.digest + spec? ─▶ no-op (changed=False)
  gates  = check_gates(facts, rules, approval, now)   (pure, kiln.planning.promotion)
  dry run ─▶ the gates and the diff, nothing written
  a gate fails ─▶ GateRefused listing every failing gate, nothing written
  else ─▶ commands.create_release(origin=promotion) ─▶ the loop rolls it out
```
"""

from __future__ import annotations

from kiln.config.file import EnvironmentsSettings
from kiln.controller import commands
from kiln.controller.promotion_views import ApprovalView, DiffView, PromotionView, ReleaseRef
from kiln.controller.runtime import ControlPlane
from kiln.controller.secrets import resolve_versions
from kiln.errors import GateRefused, InvalidInput, NotFound
from kiln.model import AppKey, EventKind, Release, ReleaseOrigin, RolloutState
from kiln.planning.promotion import ApprovalFact, GateRules, SourceFacts, check_gates
from kiln.spec import AppSpec, FieldChange, for_environment, spec_changes, spec_hash

_TROUBLE_KINDS = frozenset({EventKind.INSTANCE_EXITED, EventKind.INSTANCE_UNHEALTHY})
_TROUBLE_SCAN = 1000  # events of the source app looked at for its last crash


def _environments(plane: ControlPlane) -> EnvironmentsSettings:
    return plane.settings.file.environments


def check_order(settings: EnvironmentsSettings, source: str, target: str) -> None:
    """Promotion goes one step along the configured order; anything else is bad input."""
    order = settings.order
    chain = " → ".join(order)
    for name in (source, target):
        if name not in order:
            raise NotFound(
                f"{name!r} is not one of the environments ({chain}); the order is set in "
                "the settings file under environments.order"
            )
    if source == target:
        raise InvalidInput(f"--from and --to are both {source}: promote to the next environment")
    if order.index(target) != order.index(source) + 1:
        expected = settings.previous(target)
        if order.index(target) < order.index(source):
            raise InvalidInput(
                f"{target} comes before {source} in {chain}: promotion goes forward; to go "
                f"back, `kiln rollback APP -e {target}` or deploy there"
            )
        raise InvalidInput(
            f"{target} takes releases from {expected} ({chain}): promote {source} → "
            f"{settings.order[order.index(source) + 1]} first"
        )


async def _source_release(plane: ControlPlane, key: AppKey, number: int | None) -> Release:
    app = await plane.require_app(key)
    if number is not None:
        return await plane.store.get_release(key, number)
    serving = app.stable_release or app.target_release
    if serving is None:
        raise NotFound(f"{key} has no release that serves; deploy it first")
    return await plane.store.get_release(key, serving)


def promoted_spec(source: Release, target_environment: str) -> AppSpec:
    """The source's base spec, in the target environment, with the target's overrides."""
    return for_environment(source.base, target_environment)


async def _facts(plane: ControlPlane, source: Release) -> SourceFacts:
    key = source.key
    app = await plane.require_app(key)
    rollouts = [r for r in await plane.store.list_rollouts(key) if r.to_release == source.number]
    # The rollout that decides: the last one that brought this release in.
    rollout = rollouts[-1] if rollouts else None
    succeeded = [r for r in rollouts if r.state is RolloutState.SUCCEEDED]
    live_since = succeeded[-1].finished_at if succeeded else None
    if succeeded and rollout is not None and rollout.state is RolloutState.SUPERSEDED:
        rollout = succeeded[-1]
    serving = (
        not app.stopped
        and app.target_release == source.number
        and app.stable_release == source.number
    )
    last_plan = plane.last_plans.get(key)
    ready = last_plan.ready if last_plan is not None and serving else 0
    trouble = None
    if live_since is not None:
        for event in await plane.store.list_events(key=key, limit=_TROUBLE_SCAN):
            if (
                event.kind in _TROUBLE_KINDS
                and event.release == source.number
                and event.at > live_since
            ):
                trouble = event.at if trouble is None else max(trouble, event.at)
    progress = rollout.progress if rollout is not None else None
    return SourceFacts(
        environment=key.environment,
        app=key.app,
        release=source.number,
        serving=serving,
        ready=ready,
        wanted=app.scale,
        rollout_state=rollout.state.value if rollout is not None else None,
        rollout_reason=rollout.reason if rollout is not None else "",
        live_since=live_since,
        trouble_at=trouble,
        analysis=source.spec.deploy.analysis is not None,
        analysis_windows=progress.windows if progress is not None else 0,
        analysis_verdict=progress.last_verdict if progress is not None else "",
    )


async def _approval_of(plane: ControlPlane, target: AppKey, source: Release) -> ApprovalFact | None:
    for approval in reversed(await plane.store.list_approvals(target)):
        if (
            approval.source_environment == source.key.environment
            and approval.source_release == source.number
            and approval.digest == source.digest
            and approval.spec_hash == source.spec_hash
        ):
            return ApprovalFact(approved_by=approval.approved_by, approved_at=approval.approved_at)
    return None


def _ref(release: Release) -> ReleaseRef:
    return ReleaseRef(
        key=release.key,
        number=release.number,
        image=release.image,
        digest=release.digest,
        spec_hash=release.spec_hash,
    )


def _diff(
    left: ReleaseRef,
    left_spec: AppSpec | None,
    right: ReleaseRef,
    right_spec: AppSpec,
    secrets: tuple[dict[str, int], dict[str, int]] = ({}, {}),
) -> DiffView:
    before = left_spec if left_spec is not None else right_spec
    old, new = secrets
    return DiffView(
        left=left,
        right=right,
        digest_changed=left.digest != right.digest,
        changes=spec_changes(before, right_spec) if left_spec is not None else [],
        # Versions only, never values: which secrets a release would bring in another version.
        secrets=[
            FieldChange(path=name, before=old.get(name), after=new.get(name))
            for name in sorted(set(old) | set(new))
            if old.get(name) != new.get(name)
        ],
    )


async def _current(plane: ControlPlane, key: AppKey) -> Release | None:
    app = await plane.store.get_app(key)
    if app is None or app.stopped:
        return None
    number = app.target_release or app.stable_release
    return await plane.store.get_release(key, number) if number is not None else None


async def promote(
    plane: ControlPlane,
    app: str,
    *,
    source_environment: str,
    target_environment: str,
    release: int | None,
    dry_run: bool,
    message: str,
    who: str,
) -> PromotionView:
    settings = _environments(plane)
    check_order(settings, source_environment, target_environment)
    source_key = AppKey(source_environment, app)
    target_key = AppKey(target_environment, app)
    source = await _source_release(plane, source_key, release)
    spec = promoted_spec(source, target_environment)
    hashed = spec_hash(spec)
    current = await _current(plane, target_key)
    new_ref = ReleaseRef(
        key=target_key, number=None, image=source.image, digest=source.digest, spec_hash=hashed
    )
    empty = ReleaseRef(key=target_key, number=None, image="", digest="", spec_hash="")
    try:
        incoming = await resolve_versions(plane, target_key, spec)
    except InvalidInput:
        incoming = {}  # a secret not set there yet: the promotion itself says so
    diff = _diff(
        _ref(current) if current else empty,
        current.spec if current else None,
        new_ref,
        spec,
        (current.secret_versions if current else {}, incoming),
    )
    what = f"{source_key} release {source.number}"
    if current is not None and current.digest == source.digest and current.spec_hash == hashed:
        return PromotionView(
            source=source,
            target=target_key,
            gates=[],
            diff=diff,
            dry_run=dry_run,
            changed=False,
            release=current,
            rollout=await plane.store.active_rollout(target_key),
            message=f"nothing to promote: {target_key} already runs release {current.number}, "
            f"the same image digest and spec as {what}",
        )
    rule = settings.gate(target_environment)
    rules = GateRules(
        environment=target_environment,
        min_soak=rule.min_soak,
        approval_required=rule.approval == "required",
    )
    gates = check_gates(
        await _facts(plane, source),
        rules,
        await _approval_of(plane, target_key, source),
        now=plane.clock(),
    )
    failing = [gate for gate in gates if not gate.passed]
    if dry_run:
        verdict = "every gate passes" if not failing else f"{len(failing)} gate(s) would refuse it"
        return PromotionView(
            source=source,
            target=target_key,
            gates=gates,
            diff=diff,
            dry_run=True,
            changed=False,
            message=f"dry run: promoting {what} to {target_environment}: {verdict}; "
            "nothing changed",
        )
    if failing:
        raise GateRefused(
            f"{what} cannot be promoted to {target_environment}; nothing changed:\n"
            + "\n".join(f"  - {gate.name}: {gate.detail}" for gate in failing),
            gates=[f"{gate.name}: {gate.detail}" for gate in failing],
        )
    note = f"promoted from {what}" + (f" — {message}" if message else "")
    result = await commands.create_release(
        plane,
        spec,
        image=source.image,
        digest=source.digest,
        message=note,
        who=who,
        origin=ReleaseOrigin.PROMOTION,
        rollback_of=None,
        base_spec=source.base.model_copy(update={"environment": target_environment}),
    )
    plane.events.record(
        source_key,
        EventKind.RELEASE_PROMOTED,
        f"{who} promoted release {source.number} to {target_key} as release "
        f"{result.release.number} (digest {source.digest})",
        release=source.number,
    )
    return PromotionView(
        source=source,
        target=target_key,
        gates=gates,
        diff=diff,
        dry_run=False,
        changed=True,
        release=result.release,
        rollout=result.rollout,
        message=f"{target_key} release {result.release.number} created from {what} "
        f"(digest {source.digest}); {spec.deploy.strategy.value} rollout started",
    )


async def approve(
    plane: ControlPlane,
    app: str,
    *,
    target_environment: str,
    release: int,
    source_environment: str | None,
    note: str,
    who: str,
) -> ApprovalView:
    settings = _environments(plane)
    source_env = source_environment or settings.previous(target_environment)
    chain = " → ".join(settings.order)
    if target_environment not in settings.order:
        raise NotFound(
            f"{target_environment!r} is not one of the environments ({chain}); the order is "
            "set in the settings file under environments.order"
        )
    if source_env is None:
        raise InvalidInput(
            f"{target_environment} takes no promotions: it is the first environment ({chain})"
        )
    check_order(settings, source_env, target_environment)
    source_key = AppKey(source_env, app)
    await plane.require_app(source_key)
    source = await plane.store.get_release(source_key, release)
    target_key = AppKey(target_environment, app)
    approval = await plane.store.add_approval(
        target_key,
        source_environment=source_env,
        source_release=release,
        digest=source.digest,
        spec_hash=source.spec_hash,
        approved_by=who,
        note=note,
        now=plane.clock(),
    )
    required = settings.gate(target_environment).approval == "required"
    plane.events.record(
        source_key,
        EventKind.RELEASE_APPROVED,
        f"{who} approved release {release} of {source_key} for {target_environment}"
        + (f" — {note}" if note else "")
        + ("" if required else f" ({target_environment} does not require approvals)"),
        release=release,
    )
    return ApprovalView(
        approval=approval,
        required=required,
        message=f"release {release} of {source_key} is approved for {target_environment}; "
        f"`kiln promote {app} --from {source_env} --to {target_environment}` promotes it"
        + ("" if required else f" ({target_environment} does not require approvals)"),
    )


async def diff_releases(plane: ControlPlane, key: AppKey, left: int, right: int) -> DiffView:
    await plane.require_app(key)
    a = await plane.store.get_release(key, left)
    b = await plane.store.get_release(key, right)
    return _diff(_ref(a), a.spec, _ref(b), b.spec, (a.secret_versions, b.secret_versions))


async def diff_environments(plane: ControlPlane, app: str, left: str, right: str) -> DiffView:
    """What the app runs in ``left`` against what it runs in ``right``."""
    releases = []
    for environment in (left, right):
        key = AppKey(environment, app)
        await plane.require_app(key)
        current = await _current(plane, key)
        if current is None:
            raise NotFound(f"{key} runs no release (stopped, or never deployed)")
        releases.append(current)
    a, b = releases
    return _diff(_ref(a), a.spec, _ref(b), b.spec, (a.secret_versions, b.secret_versions))
