"""``FakeDriver``: an in-memory stand-in for a container engine, for tests of the layers above.

It is a *fake*, not a mock: it keeps state (images, containers, events) and follows the same
contract as ``DockerDriver`` (same errors, same lifecycle), so controller and API tests run in
milliseconds without Docker. Knobs for tests:

    add_image(ref) -> digest            the engine "has" this image (no pulls, like kiln's engine)
    crash(instance_id, exit_code)       the process dies: status exited, a "die" event
    fail_next_start(exc)                the next start_instance raises ``exc``
    set_exec_result(container, code)    what exec returns there (default 0; an exception is raised)
    add_log(container, text, stream)    a log line (followers see it at once)
    go_down() / come_back()             the engine stops answering (DriverUnavailable; watches end)
    started / stopped / removed         records of what kiln asked for, in order

Addresses are deterministic: 127.0.0.1 and a port counter starting at ``first_port``. Stopped
containers are removed, as ``DockerDriver.stop_instance`` does.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from kiln.drivers.base import DriverEvent, LogLine
from kiln.errors import Conflict, DriverUnavailable, ImageNotFound, NotFound
from kiln.model import Address, AppKey, Instance, InstanceSpec, InstanceStatus


@dataclass
class FakeContainer:
    spec: InstanceSpec
    instance: Instance
    logs: list[LogLine] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC)


class FakeDriver:
    """An in-memory container engine implementing the ``Driver`` protocol (a test fake)."""

    name = "fake"

    def __init__(self, *, first_port: int = 20000, clock: Callable[[], datetime] = _now) -> None:
        self.clock = clock
        self.images: dict[str, str] = {}  # reference (tag or digest) → digest
        self.containers: dict[str, FakeContainer] = {}  # container id → container
        self.started: list[InstanceSpec] = []
        self.stopped: list[str] = []  # container ids, in the order kiln stopped them
        self.removed: list[str] = []
        self.exec_calls: list[tuple[str, tuple[str, ...]]] = []
        self.available = True
        self._next_port = first_port
        self._next_id = 0
        self._start_failures: list[BaseException] = []
        self._exec_results: dict[str, int | BaseException] = {}
        self._watchers: list[asyncio.Queue[DriverEvent | None]] = []
        self._log_waiters: list[asyncio.Event] = []

    # --- knobs ---------------------------------------------------------------------------------

    def add_image(self, reference: str) -> str:
        """Make ``reference`` resolvable; return its digest (stable for the same reference)."""
        digest = "sha256:" + hashlib.sha256(reference.encode()).hexdigest()
        self.images[reference] = digest
        self.images[digest] = digest
        return digest

    def crash(self, instance_id: str, exit_code: int = 1, *, oom: bool = False) -> Instance:
        """The instance's process dies on its own; kiln should notice and replace it."""
        container = self._by_instance(instance_id)
        instance = replace(
            container.instance,
            status=InstanceStatus.EXITED,
            exit_code=exit_code,
            finished_at=self.clock(),
            oom_killed=oom,
            address=None,
        )
        container.instance = instance
        if oom:
            self._emit(instance, "oom")
        self._emit(instance, "die", exit_code)
        return instance

    def fail_next_start(self, exc: BaseException) -> None:
        """The next ``start_instance`` raises ``exc`` (queued: call twice to fail two starts)."""
        self._start_failures.append(exc)

    def set_exec_result(self, container_or_instance_id: str, result: int | BaseException) -> None:
        self._exec_results[container_or_instance_id] = result

    def add_log(
        self, container_id: str, text: str, stream: Literal["stdout", "stderr"] = "stdout"
    ) -> None:
        container = self._get(container_id)
        container.logs.append(
            LogLine(instance_id=container.instance.id, at=self.clock(), stream=stream, text=text)
        )
        for waiter in self._log_waiters:
            waiter.set()

    def emit(self, event: DriverEvent) -> None:
        """Push an engine event to every watcher."""
        for queue in self._watchers:
            queue.put_nowait(event)

    def go_down(self) -> None:
        """The engine stops answering: calls raise ``DriverUnavailable``, watches end."""
        self.available = False
        for queue in self._watchers:
            queue.put_nowait(None)

    def come_back(self) -> None:
        self.available = True

    def instance(self, instance_id: str) -> Instance:
        return self._by_instance(instance_id).instance

    @property
    def running(self) -> list[Instance]:
        return [c.instance for c in self.containers.values() if c.instance.running]

    # --- the Driver protocol -------------------------------------------------------------------

    async def ping(self) -> None:
        self._check_up()

    async def resolve_image(self, reference: str) -> str:
        self._check_up()
        if reference in self.images:
            return self.images[reference]
        _, at, digest = reference.rpartition("@")
        if at and digest in self.images:
            return digest
        raise ImageNotFound(f"image {reference!r} does not exist on the fake engine")

    async def list_instances(self, key: AppKey | None = None) -> list[Instance]:
        self._check_up()
        return [
            c.instance for c in self.containers.values() if key is None or c.instance.key == key
        ]

    async def start_instance(self, spec: InstanceSpec) -> Instance:
        self._check_up()
        if self._start_failures:
            raise self._start_failures.pop(0)
        if spec.image not in self.images:
            raise ImageNotFound(f"image {spec.image!r} does not exist on the fake engine")
        for cid, other in list(self.containers.items()):
            if other.spec.name == spec.name:
                if other.instance.running:
                    raise Conflict(f"cannot start {spec.name}: a running container has the name")
                del self.containers[cid]
        self._next_id += 1
        container_id = f"{self._next_id:064x}"
        address = None
        if spec.port is not None:
            address = Address("127.0.0.1", self._next_port)
            self._next_port += 1
        instance = Instance(
            id=spec.id,
            key=spec.key,
            release=spec.release,
            container_id=container_id,
            status=InstanceStatus.RUNNING,
            address=address,
            started_at=self.clock(),
        )
        self.containers[container_id] = FakeContainer(spec=spec, instance=instance)
        self.started.append(spec)
        self._emit(instance, "create")
        self._emit(instance, "start")
        return instance

    async def stop_instance(self, container_id: str, *, grace: float) -> None:
        self._check_up()
        container = self.containers.pop(container_id, None)
        if container is None:
            return
        self.stopped.append(container_id)
        if container.instance.running:
            self._emit(container.instance, "die", 143)  # SIGTERM honoured
        self._emit(container.instance, "destroy")

    async def remove_instance(self, container_id: str) -> None:
        self._check_up()
        container = self.containers.pop(container_id, None)
        if container is None:
            return
        self.removed.append(container_id)
        if container.instance.running:
            self._emit(container.instance, "die", 137)
        self._emit(container.instance, "destroy")

    async def exec(self, container_id: str, command: Sequence[str], *, timeout: float) -> int:
        self._check_up()
        container = self._get(container_id)
        if not container.instance.running:
            raise Conflict(f"container {container_id[:12]} is not running")
        self.exec_calls.append((container_id, tuple(command)))
        result = self._exec_results.get(
            container_id, self._exec_results.get(container.instance.id, 0)
        )
        if isinstance(result, BaseException):
            raise result
        return result

    def logs(
        self, container_ids: Sequence[str], *, follow: bool, tail: int | None
    ) -> AsyncGenerator[LogLine, None]:
        return self._logs(list(container_ids), follow=follow, tail=tail)

    async def _logs(
        self, container_ids: list[str], *, follow: bool, tail: int | None
    ) -> AsyncGenerator[LogLine, None]:
        self._check_up()
        sent = {}  # per container: how many of its lines were yielded or skipped
        for cid in container_ids:
            count = len(self._get(cid).logs)
            sent[cid] = max(0, count - tail) if tail is not None else 0
        waiter = asyncio.Event()
        self._log_waiters.append(waiter)  # before the first yield: no line added later is missed
        try:
            while True:
                waiter.clear()
                for cid in container_ids:
                    container = self.containers.get(cid)
                    while container is not None and sent[cid] < len(container.logs):
                        sent[cid] += 1
                        yield container.logs[sent[cid] - 1]
                if not follow:
                    return
                await waiter.wait()
        finally:
            self._log_waiters.remove(waiter)

    def watch(self) -> AsyncGenerator[DriverEvent, None]:
        # Subscribed at the call, like DockerDriver (which asks the engine for events since then).
        queue: asyncio.Queue[DriverEvent | None] = asyncio.Queue()
        if self.available:
            self._watchers.append(queue)
        return self._watch(queue, opened=self.available)

    async def _watch(
        self, queue: asyncio.Queue[DriverEvent | None], *, opened: bool
    ) -> AsyncGenerator[DriverEvent, None]:
        if not opened:
            raise DriverUnavailable("the fake engine does not answer (FakeDriver.go_down())")
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            if queue in self._watchers:
                self._watchers.remove(queue)

    async def close(self) -> None:
        for queue in self._watchers:
            queue.put_nowait(None)

    # --- helpers -------------------------------------------------------------------------------

    def _check_up(self) -> None:
        if not self.available:
            raise DriverUnavailable("the fake engine does not answer (FakeDriver.go_down())")

    def _get(self, container_id: str) -> FakeContainer:
        container = self.containers.get(container_id)
        if container is None:
            raise NotFound(f"no container {container_id[:12]} on the fake engine")
        return container

    def _by_instance(self, instance_id: str) -> FakeContainer:
        for container in self.containers.values():
            if container.instance.id == instance_id:
                return container
        raise NotFound(f"no instance {instance_id} on the fake engine")

    def _emit(self, instance: Instance, action: str, exit_code: int | None = None) -> None:
        self.emit(
            DriverEvent(
                key=instance.key,
                instance_id=instance.id,
                container_id=instance.container_id,
                action=action,
                exit_code=exit_code,
            )
        )
