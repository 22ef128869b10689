"""The route table, level-based (invariant 8): every round recomputes the app's routes from its
release groups (``Plan.routes``: the routes of the releases that take traffic), and
``sync_routes`` converges NGINX to the union of every app's when it differs from what NGINX
holds. Nothing is applied once from a command.

Applies are shared (a group commit, groupcommit.py): every round, command, start and router
supervisor that asks while an apply is under way waits for the next one, which reads desired
state after they all asked and so carries all their changes at once. A hundred apps destroyed
or re-routed together make a few applies, not a hundred; each caller still learns whether its
own routes went in (``RoutesOutcome``).

One app's bad routes never hurt another app or kiln's start: when NGINX rejects the table (or
two apps claim the same host and path), the apps whose routes changed are added in order on top
of the last good table (in halves, down to one app, so a big batch costs a few checks); those
that break it keep their previous routes, and the rollout that brought the bad routes fails
(its release rolls back) with NGINX's reason. The narrowing only checks tables
(``router.check_routes``: render and ``nginx -t``, no reload); the table it ends with is applied
once, so a refused batch costs one reload, not one per step (every reload cuts the idle
keep-alive connections of every client).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kiln.controller.runtime import ControlPlane
from kiln.errors import Conflict, InvalidInput, KilnError, RouterConfigRejected
from kiln.model import AppKey, EventKind, Release, RolloutState, RouteEntry, Severity
from kiln.planning import app_routes, route_table

log = logging.getLogger("kiln.controller")

RouteTable = dict[AppKey, tuple[RouteEntry, ...]]


async def current_route_table(
    plane: ControlPlane, *, with_release: Release | None = None
) -> list[RouteEntry]:
    """Every app's routes as its current release gives them (``with_release`` standing in for
    its app's); a clash between two apps raises ``Conflict``. Used to refuse a clashing deploy
    before anything is written."""
    releases: dict[AppKey, Release] = {}
    for app in await plane.store.list_apps():
        number = app.target_release or app.stable_release
        if number is not None:
            releases[app.key] = await plane.store.get_release(app.key, number)
    if with_release is not None:
        releases[with_release.key] = with_release
    return route_table(releases.values())


async def planned_routes(plane: ControlPlane) -> RouteTable:
    """Each known app's routes: as its last round planned them, or (not reconciled yet since
    kiln started) as its current release gives them, so a restart never drops a route."""
    table: RouteTable = {}
    for app in await plane.store.list_apps():
        memory = plane.observer.memory.get(app.key)
        if memory is not None and memory.routes is not None:
            table[app.key] = memory.routes
            continue
        number = app.target_release or app.stable_release
        try:
            release = await plane.release_or_none(app.key, number) if number else None
        except KilnError as exc:
            # A release this kiln cannot read (stored by an older, laxer kiln): its app gets
            # no routes, every other app keeps its own.
            log.error("routes of %s left out: %s", app.key, exc.message)
            release = None
        # The same shape as a round plans (preview host included): a restart reloads nothing.
        table[app.key] = app_routes(app.key, [release]) if release is not None else ()
    return table


def flatten(table: Mapping[AppKey, Iterable[RouteEntry]]) -> list[RouteEntry]:
    """One list for the router; the same host and path claimed by two apps is a ``Conflict``."""
    owners: dict[tuple[str | None, str, bool], RouteEntry] = {}
    for key in sorted(table):
        for entry in table[key]:
            clash = owners.get((entry.host, entry.path, entry.preview))
            if clash is not None and clash.key != entry.key:
                raise Conflict(
                    f"route {entry.host or '*'}{entry.path} is already served by {clash.key}"
                )
            owners[(entry.host, entry.path, entry.preview)] = entry
    return sorted(owners.values(), key=lambda e: (e.host or "", e.path, e.preview, str(e.key)))


async def _apply(plane: ControlPlane, routes: list[RouteEntry]) -> bool:
    """``router.apply_routes``, counted for ``kiln_nginx_reloads_total``."""
    metrics = plane.metrics
    try:
        reloaded = await plane.router.apply_routes(routes)
    except RouterConfigRejected:
        if metrics is not None:
            metrics.nginx_reloads.labels("rejected").inc()
        raise
    if reloaded and metrics is not None:
        metrics.nginx_reloads.labels("ok").inc()
    return reloaded


@dataclass(frozen=True)
class RoutesOutcome:
    """What the apply a caller waited on did: ``refused`` names the apps whose changed routes
    NGINX refused, with its reason (they keep their previous routes)."""

    refused: Mapping[AppKey, str] = field(default_factory=dict)

    def accepted(self, key: AppKey) -> bool:
        """Whether NGINX holds the routes ``key`` wants (its own change, if it made one)."""
        return key not in self.refused


async def sync_routes(plane: ControlPlane, *, force: bool = False) -> RoutesOutcome:
    """Converge NGINX's routes to every app's planned routes (a reload only on a change), in
    an apply that started after this call, shared with every caller that asked meanwhile
    (groupcommit.py): a hundred apps that change their routes at once make one apply, not a
    hundred. ``force``: apply even when the table looks unchanged (NGINX restarted)."""
    refused = await plane.route_applies.join(force, lambda forces: _converge(plane, any(forces)))
    return RoutesOutcome(refused)


async def _converge(plane: ControlPlane, force: bool) -> dict[AppKey, str]:
    """One apply for every caller that joined: desired state read now, after they all asked
    (level-based: whatever they changed is in it, and the table is never a command's)."""
    wanted = await planned_routes(plane)
    applied = plane.applied_routes
    if not force and applied is not None and wanted == applied:
        return {}
    try:
        await _apply(plane, flatten(wanted))
        plane.applied_routes = wanted
        return {}
    except (RouterConfigRejected, InvalidInput, Conflict) as exc:
        first_error = exc.message
    return await _isolate(plane, wanted, applied or {}, first_error)


async def _check(plane: ControlPlane, table: RouteTable) -> str | None:
    """Whether NGINX would take this table, asked without applying it (no reload): None, or
    why not (two apps claiming one host and path, or NGINX's own words)."""
    try:
        routes = flatten(table)
    except Conflict as exc:
        return exc.message
    return await plane.router.check_routes(routes)


async def _isolate(
    plane: ControlPlane, wanted: RouteTable, applied: RouteTable, first_error: str
) -> dict[AppKey, str]:
    """Add the changed apps to the last good table, in order, a group at a time (``_admit``,
    by checks only), then apply the table that comes out, once: the ones NGINX refuses keep
    their previous routes and their rollout fails. Returns them with NGINX's reason."""
    good: RouteTable = {key: routes for key, routes in applied.items() if key in wanted}
    changed = sorted(key for key in wanted if wanted[key] != applied.get(key))
    refused: dict[AppKey, str] = {}
    # good + every changed app is the table NGINX just refused.
    good = await _admit(plane, good, wanted, changed, refused, first_error)
    if changed and not refused:
        log.warning("route table refused as a whole but every app alone passed: %s", first_error)
    try:
        # The one reload of the narrowing (none when every changed app was refused and nothing
        # else moved: the router sees its own config).
        await _apply(plane, flatten(good))
    except KilnError as exc:
        plane.events.record(
            None, EventKind.ROUTER_CONFIG_REJECTED, exc.message, severity=Severity.ERROR
        )
        # The table the checks admitted did not go in (NGINX refused the reload, or went
        # away): NGINX kept what it had, no changed app can count on its routes (the next
        # sync tries again; no rollout fails for this).
        return {key: exc.message for key in changed}
    plane.applied_routes = {**good, **{key: applied.get(key, ()) for key in refused}}
    for key, reason in refused.items():
        await _fail_rollout_for_routes(plane, key, reason)
    return refused


async def _admit(
    plane: ControlPlane,
    good: RouteTable,
    wanted: RouteTable,
    keys: list[AppKey],
    refused: dict[AppKey, str],
    failure: str | None,
) -> RouteTable:
    """``good`` plus the routes of those of ``keys`` NGINX accepts on top of it, in order: the
    same outcome as adding them one at a time (an app is refused when it breaks the table of
    every app before it that passed), but a batch of a hundred changed apps with one bad app
    costs about 2·log2(100) checks, not a hundred. Each step is a check (``_check``), never an
    apply: NGINX keeps serving its config untouched until the caller applies the result.
    ``failure``: NGINX's reason when ``good`` plus all of ``keys`` is already known to be
    refused."""
    if not keys:
        return good
    if failure is None:
        trial = {**good, **{key: wanted[key] for key in keys}}
        failure = await _check(plane, trial)
        if failure is None:
            return trial
    if len(keys) == 1:
        refused[keys[0]] = failure
        return good
    half = len(keys) // 2
    before = len(refused)
    good = await _admit(plane, good, wanted, keys[:half], refused, None)
    # The first half all passed: good + the second half is the table just refused.
    known = failure if len(refused) == before else None
    return await _admit(plane, good, wanted, keys[half:], refused, known)


async def _fail_rollout_for_routes(plane: ControlPlane, key: AppKey, reason: str) -> None:
    rollout = await plane.store.active_rollout(key)
    text = f"NGINX refused the routes of {key}: {reason}"
    if rollout is None:
        plane.events.record(
            key,
            EventKind.ROUTER_CONFIG_REJECTED,
            text + "; its previous routes stay",
            severity=Severity.ERROR,
        )
        return
    finished = await plane.store.finish_rollout(
        rollout.id,
        RolloutState.FAILED,
        f"{text}; rolling back to release {rollout.from_release}"
        if rollout.from_release
        else f"{text}; no earlier release: app stopped",
        now=plane.clock(),
    )
    plane.events.record(
        key,
        EventKind.ROLLOUT_FAILED,
        finished.reason,
        severity=Severity.ERROR,
        release=finished.to_release,
    )
    plane.loops.wake(key)
