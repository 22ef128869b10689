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
    plant(spec, installation=...)       a container another kiln made: another installation's id
                                        (never listed, stopped or removed: Conflict) or None for a
                                        legacy one (listed with ``legacy=True``, sends no events)
    host                                what ``host_limits()`` answers (an ``HostLimits``)
    remote                              images "in the registry" ("host/repo@digest" → labels);
                                        push_image adds, pull_image copies them to the engine
    pulls / pushes / builds             records of image transfers, in order
    notes                               what ``network_notes()`` answers (a list of strings)
    host_tuning                         what ``host_notes()`` answers (a list of strings)
    started / stopped / removed         records of what kiln asked for, in order

Addresses are deterministic: 127.0.0.1 and a port counter starting at ``first_port``. Stopped
containers are removed, as ``DockerDriver.stop_instance`` does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from kiln.drivers.base import DriverEvent, InstanceStats, LogLine, Placement, Progress
from kiln.errors import Conflict, DriverUnavailable, ImageNotFound, NotFound, PermanentFailure
from kiln.model import (
    Address,
    AppKey,
    Instance,
    InstanceSpec,
    InstanceStatus,
    ScaleGroup,
    VolumeInfo,
)
from kiln.model.image import LocalImage
from kiln.spec import HostLimits


@dataclass
class FakeContainer:
    spec: InstanceSpec
    instance: Instance
    installation: str | None  # None: a legacy container (made before installation ids)
    logs: list[LogLine] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC)


DEFAULT_HOST = HostLimits(cpus=2.0, memory_bytes=4 * 1024**3)


class FakeDriver:
    """An in-memory container engine implementing the ``Driver`` protocol (a test fake)."""

    name = "fake"
    placement: Placement = "instances"

    async def scale_group(self, group: ScaleGroup) -> None:
        raise PermanentFailure(
            "the fake driver places instances one by one; it takes no group targets"
        )

    def __init__(
        self,
        *,
        installation_id: str = "fake-installation",
        first_port: int = 20000,
        clock: Callable[[], datetime] = _now,
        host: HostLimits = DEFAULT_HOST,
    ) -> None:
        self.installation_id = installation_id
        self.host = host
        self.notes: list[str] = []
        self.host_tuning: list[str] = []
        self.clock = clock
        self.images: dict[str, str] = {}  # reference (tag or digest) → digest
        self.containers: dict[str, FakeContainer] = {}  # container id → container
        self.started: list[InstanceSpec] = []
        self.secrets_of: dict[str, dict[str, bytes]] = {}  # container id → secret values
        self.volumes: dict[tuple[AppKey, str], dict[str, bytes]] = {}  # (app, volume) → files
        self.stopped: list[str] = []  # container ids, in the order kiln stopped them
        self.removed: list[str] = []
        self.exec_calls: list[tuple[str, tuple[str, ...]]] = []
        self.available = True
        self._next_port = first_port
        self._next_id = 0
        self._start_failures: list[BaseException] = []
        self._exec_results: dict[str, int | BaseException] = {}
        self._watchers: list[asyncio.Queue[DriverEvent | None]] = []
        self.tampered: dict[str, list[str]] = {}  # container id → differences ``drift`` reports
        self.drift_checks = 0
        self._log_waiters: list[asyncio.Event] = []
        self.remote: dict[str, str] = {}  # "host/repo@sha256:…" → the image id it holds
        self.labels: dict[str, dict[str, str]] = {}  # image id → labels
        self.pulls: list[str] = []
        self.pushes: list[str] = []
        self.builds: list[str] = []
        # What stats() reports, by container or instance id (running containers not named here
        # report zero use); tests and the metrics benchmark set it.
        self.usage: dict[str, InstanceStats] = {}

    # --- knobs ---------------------------------------------------------------------------------

    def add_image(self, reference: str) -> str:
        """Make ``reference`` resolvable; return its digest (stable for the same reference)."""
        digest = "sha256:" + hashlib.sha256(reference.encode()).hexdigest()
        self.images[reference] = digest
        self.images[digest] = digest
        return digest

    def tamper(self, container_id: str, *differences: str) -> None:
        """Make ``drift`` report ``differences`` for the container (someone changed it)."""
        self.tampered.setdefault(container_id, []).extend(differences)

    def plant(
        self, spec: InstanceSpec, *, installation: str | None, running: bool = True
    ) -> Instance:
        """A container that another kiln made: ``installation`` is its id, or None for a legacy
        one. The image need not exist; nothing is recorded in ``started``."""
        self._next_id += 1
        instance = Instance(
            id=spec.id,
            key=spec.key,
            release=spec.release,
            container_id=f"{self._next_id:064x}",
            status=InstanceStatus.RUNNING if running else InstanceStatus.EXITED,
            started_at=self.clock(),
            exit_code=None if running else 0,
            legacy=installation is None,
        )
        self.containers[instance.container_id] = FakeContainer(
            spec=spec, instance=instance, installation=installation
        )
        return instance

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
            self._emit(container, "oom")
        self._emit(container, "die", exit_code)
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

    def drop_streams(self) -> None:
        """Every event stream ends while the engine goes on answering (a proxy in between
        restarted, a connection reset): what happens until a watch opens again is told to no one."""
        for queue in self._watchers:
            queue.put_nowait(None)
        self._watchers.clear()

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
            c.instance
            for c in self.containers.values()
            if self._visible(c) and (key is None or c.instance.key == key)
        ]

    async def inspect_instance(self, container_id: str) -> Instance | None:
        self._check_up()
        container = self.containers.get(container_id)
        return container.instance if container is not None and self._visible(container) else None

    async def start_instance(
        self, spec: InstanceSpec, *, secrets: Mapping[str, bytes] | None = None
    ) -> Instance:
        self._check_up()
        if self._start_failures:
            raise self._start_failures.pop(0)
        if spec.image not in self.images:
            raise ImageNotFound(f"image {spec.image!r} does not exist on the fake engine")
        for cid, other in list(self.containers.items()):
            # Names carry the installation on the engine: only our own can clash.
            if other.installation == self.installation_id and other.spec.name == spec.name:
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
        container = FakeContainer(spec=spec, instance=instance, installation=self.installation_id)
        self.containers[container_id] = container
        self.started.append(spec)
        # What the instance would find in /run/secrets or its environment (tests read it).
        self.secrets_of[container_id] = dict(secrets or {})
        for volume in spec.volumes:  # the engine makes a named volume on first use
            self.volumes.setdefault((spec.key, volume.name), {})
        self._emit(container, "create")
        self._emit(container, "start")
        return instance

    async def stop_instance(self, container_id: str, *, grace: float) -> None:
        self._check_up()
        container = self._take(container_id, "stop")
        if container is None:
            return
        self.stopped.append(container_id)
        if container.instance.running:
            self._emit(container, "die", 143)  # SIGTERM honoured
        self._emit(container, "destroy")

    async def remove_instance(self, container_id: str) -> bool:
        self._check_up()
        container = self._take(container_id, "remove")
        if container is None:
            return False
        self.removed.append(container_id)
        if container.instance.running:
            self._emit(container, "die", 137)
        self._emit(container, "destroy")
        return True

    async def other_installations(self) -> set[str]:
        self._check_up()
        return {
            c.installation
            for c in self.containers.values()
            if c.installation is not None and c.installation != self.installation_id
        }

    async def host_limits(self) -> HostLimits:
        self._check_up()
        return self.host

    async def network_notes(self) -> list[str]:
        self._check_up()
        return list(self.notes)

    async def host_notes(self) -> list[str]:
        self._check_up()
        return list(self.host_tuning)

    async def drift(self, container_id: str, expected: InstanceSpec) -> list[str]:
        self._check_up()
        self._get(container_id)
        self.drift_checks += 1
        return list(self.tampered.get(container_id, []))

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
            if not self._visible(self._get(cid)):
                raise NotFound(f"container {cid[:12]} is not an instance of this kiln installation")
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
                if not any(cid in self.containers for cid in container_ids):
                    return  # like Docker's follow: the stream ends once its containers are gone
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

    # --- images ------------------------------------------------------------------------------

    async def image_details(self, reference: str) -> LocalImage:
        image_id = await self.resolve_image(reference)
        pinned = tuple(ref for ref, held in self.remote.items() if held == image_id)
        return LocalImage(
            id=image_id, size=1024, labels=dict(self.labels.get(image_id, {})), repo_digests=pinned
        )

    async def push_image(
        self, image: str, *, repository: str, tag: str, auth: tuple[str, str] | None
    ) -> str:
        image_id = await self.resolve_image(image)
        digest = "sha256:" + hashlib.sha256(f"manifest of {image_id}".encode()).hexdigest()
        self.remote[f"{repository}@{digest}"] = image_id
        self.images[f"{repository}:{tag}"] = image_id
        self.images[f"{repository}@{digest}"] = image_id
        self.pushes.append(f"{repository}:{tag}")
        return digest

    async def pull_image(
        self,
        reference: str,
        *,
        auth: tuple[str, str] | None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self._check_up()
        self.pulls.append(reference)
        if reference not in self.remote:
            raise ImageNotFound(f"the registry does not have {reference} (fake)")
        self.images[reference] = self.remote[reference]
        self.images[self.remote[reference]] = self.remote[reference]
        if progress is not None:
            progress(f"{reference[-12:]}: Pull complete")

    async def build_image(
        self,
        context: bytes,
        *,
        tag: str,
        labels: dict[str, str],
        dockerfile: str = "Dockerfile",
        progress: Callable[[str], None] | None = None,
    ) -> str:
        self._check_up()
        seed = context + json.dumps(labels, sort_keys=True).encode() + dockerfile.encode()
        image_id = "sha256:" + hashlib.sha256(seed).hexdigest()
        self.images[tag] = image_id
        self.images[image_id] = image_id
        self.labels[image_id] = dict(labels)
        self.builds.append(tag)
        return image_id

    async def stats(self, container_ids: Sequence[str]) -> dict[str, InstanceStats]:
        self._check_up()
        found: dict[str, InstanceStats] = {}
        for cid in container_ids:
            container = self.containers.get(cid)
            if container is None or not self._visible(container):
                continue
            if container.instance.status is not InstanceStatus.RUNNING:
                continue
            found[cid] = self.usage.get(
                cid,
                self.usage.get(
                    container.instance.id, InstanceStats(cpu_seconds=0.0, memory_bytes=0)
                ),
            )
        return found

    # --- volumes: a volume is a dict of file name → bytes ---------------------------------

    def _volume_users(self, key: AppKey, name: str) -> list[str]:
        return [
            c.instance.id
            for c in self.containers.values()
            if c.instance.running
            and c.spec.key == key
            and any(v.name == name for v in c.spec.volumes)
        ]

    async def list_volumes(self, key: AppKey | None = None) -> list[VolumeInfo]:
        for container in self.containers.values():  # a started instance creates its volumes
            for volume in container.spec.volumes:
                self.volumes.setdefault((container.spec.key, volume.name), {})
        return [
            VolumeInfo(key=k, name=n, engine_name=f"fake-{k.environment}-{k.app}-{n}")
            for (k, n) in sorted(self.volumes, key=lambda kn: (str(kn[0]), kn[1]))
            if key is None or k == key
        ]

    async def remove_volume(self, key: AppKey, name: str) -> None:
        if (key, name) not in self.volumes:
            raise NotFound(f"{key} has no volume {name}")
        if self._volume_users(key, name):
            raise Conflict(f"volume {name} of {key} is in use: stop the app first")
        del self.volumes[key, name]

    async def export_volume(
        self, key: AppKey, name: str, *, image: str, into: Path, progress: Progress
    ) -> tuple[int, str]:
        if (key, name) not in self.volumes:
            raise NotFound(f"{key} has no volume {name}")
        data = json.dumps({k: v.hex() for k, v in sorted(self.volumes[key, name].items())}).encode()
        await asyncio.to_thread(into.write_bytes, data)
        progress(len(data))
        return len(data), hashlib.sha256(data).hexdigest()

    async def import_volume(
        self, key: AppKey, name: str, *, image: str, source: Path, progress: Progress
    ) -> None:
        if self._volume_users(key, name):
            raise Conflict(f"volume {name} of {key} is in use: stop the app first")
        data = await asyncio.to_thread(source.read_bytes)
        self.volumes[key, name] = {k: bytes.fromhex(v) for k, v in json.loads(data).items()}
        progress(len(data))

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

    def _visible(self, container: FakeContainer) -> bool:
        """Ours or legacy: what this installation may see and touch."""
        return container.installation in (self.installation_id, None)

    def _take(self, container_id: str, verb: str) -> FakeContainer | None:
        container = self.containers.get(container_id)
        if container is None:
            return None
        if not self._visible(container):
            raise Conflict(
                f"will not {verb} container {container_id[:12]}: it belongs to another kiln"
                f" installation ({container.installation})"
            )
        taken = self.containers.pop(container_id)
        for waiter in self._log_waiters:  # a follow of it ends (see _logs)
            waiter.set()
        return taken

    def _emit(self, container: FakeContainer, action: str, exit_code: int | None = None) -> None:
        # Like DockerDriver's watch (filtered at the engine on the installation label): events
        # of our own containers only.
        if container.installation != self.installation_id:
            return
        instance = container.instance
        self.emit(
            DriverEvent(
                key=instance.key,
                instance_id=instance.id,
                container_id=instance.container_id,
                action=action,
                exit_code=exit_code,
            )
        )
