"""The driver seam: everything kiln asks of a container engine or orchestrator.

Implementations: ``kiln.drivers.docker.DockerDriver`` (the local Docker engine) and
``kiln.drivers.fake.FakeDriver`` (in memory, for tests of the layers above). Every method maps
engine errors to ``kiln.errors`` (``DriverUnavailable`` when the engine does not answer,
``ImageNotFound``, ``NotFound``) with ``raise ... from exc``.

Every driver belongs to one kiln **installation** (``installation_id``): what it creates carries
the id as the ``io.kiln.installation`` label, and it lists, watches, stops and removes only its
own objects, plus *legacy* ones (kiln-managed but with no installation label, made by a kiln from
before ids), which come back marked ``Instance.legacy``. Another installation's objects are never
returned, stopped or removed (ARCHITECTURE.md, invariant 9).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

from kiln.model import AppKey, Instance, InstanceSpec, ScaleGroup, VolumeInfo
from kiln.model.image import LocalImage
from kiln.spec import HostLimits

Progress = Callable[[int], None]
"""Called from a worker thread with the bytes copied so far."""

Placement = Literal["instances", "groups"]
"""Who places instances: ``instances`` — kiln starts and stops each one (Docker); ``groups`` —
an orchestrator does, told how many replicas each release group should have (Swarm,
Kubernetes), and restarts crashed ones itself."""


@dataclass(frozen=True, kw_only=True)
class LogLine:
    instance_id: str
    at: datetime | None
    stream: Literal["stdout", "stderr"]
    text: str


@dataclass(frozen=True, kw_only=True)
class InstanceStats:
    """Resource use of one running container, as its cgroup counts it."""

    cpu_seconds: float  # CPU time used since it started (user + system), cumulative
    memory_bytes: int  # memory in use, page cache that can be dropped excluded (as docker stats)


@dataclass(frozen=True, kw_only=True)
class DriverEvent:
    """A lifecycle change of a kiln-managed container, pushed by the engine.

    The controller uses these only as a hint to reconcile ``key`` now rather than at the next
    resync; the truth is always a fresh ``list_instances()``.
    """

    key: AppKey
    instance_id: str
    container_id: str
    action: str  # "start", "die", "oom", "destroy", ...
    exit_code: int | None = None


class Driver(Protocol):
    name: str
    installation_id: str  # the kiln installation this driver acts for
    placement: Placement

    async def scale_group(self, group: ScaleGroup) -> None:
        """``groups`` placement: make release ``group.release`` of the app run ``group.replicas``
        instances shaped like ``group.template``, removing ``group.retire_first`` before any
        other. Idempotent. An ``instances`` driver is never asked (kiln places each instance
        through ``start_instance`` / ``stop_instance``) and raises ``PermanentFailure``."""

    async def ping(self) -> None:
        """Raise ``DriverUnavailable`` unless the engine answers."""

    async def resolve_image(self, reference: str) -> str:
        """The immutable id of a local image (``sha256:...``) for a tag or digest reference."""

    async def list_instances(self, key: AppKey | None = None) -> list[Instance]:
        """This installation's containers and legacy ones (``Instance.legacy``), running or
        not; only ``key``'s when given. Never another installation's."""

    async def inspect_instance(self, container_id: str) -> Instance | None:
        """One container as ``list_instances`` would list it now, or None when it is gone or
        not this installation's (nor legacy). Costs the engine one container, where a list of
        one app scans every container it runs."""

    async def start_instance(
        self, spec: InstanceSpec, *, secrets: Mapping[str, bytes] | None = None
    ) -> Instance:
        """Create and start one container; return it running, with its address when it has a port.

        ``secrets`` holds the plaintext of each of ``spec.secrets`` by name: a file secret is
        delivered as ``/run/secrets/NAME`` on a tmpfs (mode 0400, owned by the instance's
        user), an env one as a variable. The driver keeps no copy once the instance is gone, and
        never puts a value in a label, a log line or an error."""

    async def stop_instance(self, container_id: str, *, grace: float) -> None:
        """SIGTERM, SIGKILL after ``grace`` seconds, then remove. Already gone is fine.
        Another installation's container raises ``Conflict`` and is left alone."""

    async def remove_instance(self, container_id: str) -> bool:
        """Remove a container (force). Already gone is fine: False then (someone else removed
        it), True when this call removed it. Another installation's container raises
        ``Conflict`` and is left alone."""

    async def drift(self, container_id: str, expected: InstanceSpec) -> list[str]:
        """How a running instance differs from what ``start_instance(expected)`` creates: its
        image, configuration (env, command, user, mounts, limits, capabilities, kiln's labels)
        and files changed outside ``expected.tmpfs`` (a read-only root filesystem is not
        looked at). One line per difference, naming it without echoing values (env values
        may be secret); empty when it is as released. ``NotFound`` when it is gone."""

    async def exec(self, container_id: str, command: Sequence[str], *, timeout: float) -> int:
        """Run a command inside a running instance; its exit code (a timeout raises TimeoutError)."""

    def logs(
        self, container_ids: Sequence[str], *, follow: bool, tail: int | None
    ) -> AsyncIterator[LogLine]:
        """Log lines of the given containers, interleaved; with ``follow``, until cancelled.
        Another installation's container raises ``NotFound``."""

    def watch(self) -> AsyncIterator[DriverEvent]:
        """Lifecycle events of this installation's containers, until cancelled. Ends if the
        engine goes away. (Legacy containers send none: the periodic resync sees them.)"""

    async def other_installations(self) -> set[str]:
        """Ids of the other kiln installations with containers on this engine."""

    async def host_limits(self) -> HostLimits:
        """The CPUs and memory of the engine's host (what ``kiln.spec.check_runnable`` takes)."""

    # --- images: build, push to and pull from the artifact repository ---------------------
    # ``auth`` is (username, password) for a registry that wants a login, else None.

    async def image_details(self, reference: str) -> LocalImage:
        """The engine's image for a tag, id or digest reference; ``ImageNotFound`` if absent."""

    async def push_image(
        self, image: str, *, repository: str, tag: str, auth: tuple[str, str] | None
    ) -> str:
        """Tag ``image`` as ``repository:tag`` (``repository`` includes the registry host) and
        push it; the manifest digest the registry stored (``sha256:…``)."""

    async def pull_image(
        self,
        reference: str,
        *,
        auth: tuple[str, str] | None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        """Pull ``host/repo@sha256:…``; ``progress`` gets a line per layer state change (on the
        event loop). ``ImageNotFound`` when the registry does not have it."""

    async def build_image(
        self,
        context: bytes,
        *,
        tag: str,
        labels: dict[str, str],
        dockerfile: str = "Dockerfile",
        progress: Callable[[str], None] | None = None,
    ) -> str:
        """Build the tar ``context`` (with its Dockerfile) into ``tag``; the image id.
        ``InvalidInput`` with the builder's words when the build fails."""

    async def stats(self, container_ids: Sequence[str]) -> dict[str, InstanceStats]:
        """CPU time and memory of running containers, by container id; one without data (gone,
        not running) is left out. Meant for a background sampler, not one call per scrape."""

    async def network_notes(self) -> list[str]:
        """What the operator should fix in the engine's network for instances to be reachable
        reliably (said once, at start); empty when nothing."""

    async def host_notes(self) -> list[str]:
        """What the operator should tune on the engine's host for many instances to stay cheap
        (said once, at start); empty when nothing, or when the engine runs elsewhere."""

    # --- volumes (named, per installation, app and environment; labelled as kiln's) -----------

    async def list_volumes(self, key: AppKey | None = None) -> list[VolumeInfo]:
        """This installation's volumes (of ``key`` when given); never another's."""

    async def remove_volume(self, key: AppKey, name: str) -> None:
        """``NotFound`` when there is none; ``Conflict`` while a container uses it."""

    async def export_volume(
        self, key: AppKey, name: str, *, image: str, into: Path, progress: Progress
    ) -> tuple[int, str]:
        """Write the volume's files to ``into`` as a tar; (bytes, sha256 hex). ``image`` is an
        image on the engine for the helper container (created, never started)."""

    async def import_volume(
        self, key: AppKey, name: str, *, image: str, source: Path, progress: Progress
    ) -> None:
        """Replace the volume's files with the tar ``source`` (the volume is made anew, so
        nothing of the old content stays). ``Conflict`` while a container uses it."""

    async def close(self) -> None: ...
