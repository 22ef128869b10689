"""Quiet apps: those NGINX has counted no request for lately, whose instances the health monitor
then checks every ``idle_interval`` instead of every ``interval``.

    every LOOK_EVERY s: NGINX's request counters (the rounds' shared read), rollouts in progress
      per app with routes:
        its counters moved since the last look ─▶ active, as of now
        no move for health.quiet_after, no rollout in progress ─▶ quiet
      an app that turned quiet or active ─▶ health.set_quiet(each of its probed instances)

Why: 100 idle apps of 3 instances, checked every second, are 300 new connections a second for
nobody (kiln's largest cost at idle, and every one a fork of busybox httpd in the demo app;
bench/scale.py). Envoy does the same with its "no traffic interval".

An app first seen with no requests is quiet at once (after its rollout, if one runs): its
instances have just passed the checks that made them ready. Requests make it active within one
look, and its instances are checked at once. What the engine reports (a crashed container) is
acted on at once either way; only the checks of a quiet app's running instances are spaced out.
Traffic that does not pass through kiln's NGINX is not seen: such an app is quiet to kiln.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from kiln.background import Periodic
from kiln.controller.runtime import ControlPlane
from kiln.errors import KilnError
from kiln.model import AppKey

log = logging.getLogger("kiln.quiet")

LOOK_EVERY = 5.0
"""Seconds between two looks at NGINX's counters: how long requests to a quiet app may come
before its instances are checked at their interval again."""


class QuietWatch:
    def __init__(self, plane: ControlPlane, *, look_every: float = LOOK_EVERY) -> None:
        self._plane = plane
        self._requests: dict[AppKey, int] = {}  # each app's request count at the last look
        self._active_at: dict[AppKey, datetime] = {}  # when its count last moved
        self._looks = Periodic(self.look, every=look_every, name="looking for quiet apps", log=log)

    def start(self) -> None:
        if self._plane.settings.file.health.quiet_after > 0:
            self._looks.start()

    async def close(self) -> None:
        await self._looks.close()

    async def look(self) -> None:
        """Compare NGINX's counters with the last look's and tell the health monitor which
        apps turned quiet or active."""
        plane = self._plane
        quiet_after = timedelta(seconds=plane.settings.file.health.quiet_after)
        try:
            traffic = await plane.reads.traffic.get()
        except KilnError as exc:
            log.debug("NGINX's counters unavailable, quiet apps unchanged: %s", exc.message)
            return
        rolling = await plane.store.active_rollouts()
        now = plane.clock()
        routed = plane.applied_routes or {}
        apps = set(plane.last_instances)  # every app a round looked at (forget_app drops it)
        quiet: set[AppKey] = set()
        for key in apps:
            requests = sum(counters.requests for counters in traffic.get(key, {}).values())
            # A count that went down is NGINX restarted, and then counting again: requests too.
            if self._requests.get(key, requests) != requests:
                self._active_at[key] = now
            self._requests[key] = requests
            active_at = self._active_at.get(key)
            if (
                quiet_after
                and routed.get(key)
                and key not in rolling
                and (active_at is None or now - active_at >= quiet_after)
            ):
                quiet.add(key)
        for gone in set(self._requests) - apps:
            self._requests.pop(gone, None)
            self._active_at.pop(gone, None)
        for key in quiet ^ plane.quiet_apps:
            turned_quiet = key in quiet
            log.debug("%s is %s", key, "quiet" if turned_quiet else "active")
            for instance_id in plane.instance_ids_of(key):
                plane.health.set_quiet(instance_id, turned_quiet)
        plane.quiet_apps = quiet
