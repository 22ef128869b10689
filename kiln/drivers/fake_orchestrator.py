"""``FakeOrchestratorDriver``: an in-memory orchestrator (a test fake), for the ``groups`` side of
the driver seam.

Like Docker Swarm or Kubernetes, it is told "release N of app A should have k replicas, retire
these first" (``scale_group``) and places the instances itself; when one crashes it reports the
exit (status exited, a "die" event) and starts a replacement on its own, as an orchestrator's
restart policy does. kiln then sees a crash it did not have to handle. Everything else
(images, exec, logs, watch, go_down) behaves as ``FakeDriver``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from kiln.drivers.base import Placement
from kiln.drivers.fake import FakeDriver
from kiln.model import Instance, InstanceSpec, ScaleGroup


class FakeOrchestratorDriver(FakeDriver):
    name = "fake-orchestrator"
    placement: Placement = "groups"

    def __init__(
        self,
        *,
        installation_id: str = "fake-installation",
        first_port: int = 20000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(installation_id=installation_id, first_port=first_port, clock=clock)
        self.templates: dict[tuple[str, int], InstanceSpec] = {}
        self.scaled: list[ScaleGroup] = []  # every group target kiln sent, in order
        self.restarted: list[str] = []  # instance ids the orchestrator replaced on its own
        self._serial = itertools.count(1)
        self._placing: set[asyncio.Task[Instance]] = set()

    async def scale_group(self, group: ScaleGroup) -> None:
        self._check_up()
        self.scaled.append(group)
        key = (str(group.key), group.release)
        if group.template is not None:
            self.templates[key] = group.template
        # Exited instances are the orchestrator's business: it already replaced them.
        for container_id, container in list(self.containers.items()):
            instance = container.instance
            same_group = instance.key == group.key and instance.release == group.release
            if same_group and not instance.running:
                del self.containers[container_id]
        for instance_id in group.retire_first:
            found = self._find(instance_id)
            if found is not None:
                await self.stop_instance(found, grace=0)
        members = sorted(
            (
                c.instance
                for c in self.containers.values()
                if c.instance.key == group.key
                and c.instance.release == group.release
                and c.instance.running
            ),
            key=lambda i: i.id,
        )
        for extra in members[group.replicas :]:
            await self.stop_instance(extra.container_id, grace=0)
        template = self.templates.get(key)
        for _ in range(group.replicas - len(members)):
            if template is None:
                break
            await self._place(template)

    def crash(self, instance_id: str, exit_code: int = 1, *, oom: bool = False) -> Instance:
        """The process dies; the orchestrator reports it and starts a replacement itself."""
        crashed = super().crash(instance_id, exit_code, oom=oom)
        template = self.templates.get((str(crashed.key), crashed.release))
        if template is not None:
            self.restarted.append(instance_id)
            self._place_now(template)
        return crashed

    async def _place(self, template: InstanceSpec) -> Instance:
        return await self.start_instance(self._member(template))

    def _place_now(self, template: InstanceSpec) -> None:
        task = asyncio.get_running_loop().create_task(self._place(template))
        self._placing.add(task)
        task.add_done_callback(self._placing.discard)

    def _member(self, template: InstanceSpec) -> InstanceSpec:
        serial = next(self._serial)
        instance_id = f"r{template.release}-o{serial:05d}"
        return replace(template, id=instance_id, name=f"{template.name}-{serial}")

    def _find(self, instance_id: str) -> str | None:
        for container_id, container in self.containers.items():
            if container.instance.id == instance_id:
                return container_id
        return None
