"""The local Docker engine as a kiln driver: the Docker SDK (docker-py 7) for calls that
answer, aiodocker for what waits (exec, followed logs, the event stream).

The SDK is synchronous. Every call runs on this driver's own thread pool (not asyncio's default
executor, which other parts of kiln share and which has only ``cpus + 4`` threads), over one
client whose connection pool is as large as that thread pool, so calls really run concurrently;
a call holds a thread for as long as the engine takes to answer. ``exec``, ``logs`` and
``watch`` can wait on the engine for as long as a command runs or a container lives: they go
through one aiodocker client (aiohttp, on the event loop), so a followed stream costs a
connection, not a blocked thread (README.md, "Why aiodocker for the streams").

Errors are mapped at this boundary (``raise ... from exc``)::

    no socket / connection refused / no answer in time   → DriverUnavailable (says what to do)
    404 "No such image"                                   → ImageNotFound
    404 otherwise                                         → NotFound (or "fine" for stop/remove)
    a name held by another container                      → Conflict
    any other engine error                                → TemporaryFailure (engine's message)

Installation identity (ARCHITECTURE.md, invariant 9): every container this driver creates carries
``io.kiln.installation=<installation_id>`` and is named ``kiln-<first 8 of the id>-<spec.name>``.
Each container the engine returns is sorted by its labels into *ours*, *legacy* (kiln-managed, no
installation label: made by a kiln from before ids) and *another installation's*; the last kind is
never returned, stopped, removed or shown, whatever a caller asks. ``watch()`` is filtered at the
engine on our installation label. ``list_instances`` filters at the engine on kiln's labels (and
the app's) but cannot ask for "no installation label" (the engine has no negative label filter),
so it drops another installation's containers itself, before looking at them any further.

``list_instances`` is one ``GET /containers/json`` (the SDK's high-level ``containers.list``
would inspect every container). The few fields that summary lacks (start/finish time, exit code,
OOM) are read by one inspect per container *and state*, and cached: a container is never
restarted in place, so they cannot change while its state stays the same.

``watch()`` ends (returns normally) when the engine closes the event stream, e.g. when it stops
or restarts; it raises ``DriverUnavailable`` only when the stream cannot be opened. The caller
resyncs with ``list_instances()`` and opens a new watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import socket
import ssl
import tarfile
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiodocker
import aiohttp
import docker
import docker.errors
import psutil
import requests.exceptions
from docker.types import LogConfig

from kiln.drivers.base import DriverEvent, InstanceStats, LogLine, Placement, Progress
from kiln.drivers.secret_files import MOUNT_POINT as SECRETS_MOUNT
from kiln.drivers.secret_files import SecretFiles
from kiln.errors import (
    Conflict,
    DriverUnavailable,
    ImageNotFound,
    InvalidInput,
    KilnError,
    NotFound,
    PermanentFailure,
    TemporaryFailure,
)
from kiln.model import (
    LABEL_APP,
    LABEL_ENV,
    LABEL_INSTALLATION,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_RELEASE,
    Address,
    AppKey,
    Instance,
    InstanceSpec,
    InstanceStatus,
    ScaleGroup,
    VolumeInfo,
)
from kiln.model.image import LocalImage
from kiln.model.instance import LABEL_HOST_PORT, LABEL_VOLUME
from kiln.spec import HostLimits

log = logging.getLogger(__name__)


T = TypeVar("T")
ItemT = TypeVar("ItemT")

# Pinned rather than "auto": auto-detection asks the engine from inside the SDK's constructor,
# which would make building a driver fail (or hang) when the engine is down. 1.41 is Docker
# 20.10's API and is still served by every newer engine.
API_VERSION = "1.41"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
TMPFS_OPTIONS = "rw,nosuid,nodev,size=64m"
VOLUME_COPY_PATH = "/kiln-volume"  # where a helper container mounts a volume to copy it
COPY_CHUNK = 1024 * 1024
LOG_OPTIONS = {"max-size": "10m", "max-file": "3"}
WORKERS = 32
# How NGINX and health checks reach an instance on a bridge network: "direct" at the container's
# own address (no proxy process in between: ~1.6x the requests/s), or "published" through
# docker-proxy on a loopback port (for an engine whose bridge this host cannot route to: a
# rootless or remote engine). "auto" is direct when the bridge's gateway is an address of this
# host, else published. See README.md "How NGINX reaches an instance".
BridgePath = Literal["auto", "direct", "published"]
BRIDGE_PATHS: tuple[BridgePath, ...] = ("auto", "direct", "published")
HOST_PORT_RANGE = (20000, 29999)
PORT_TAKEN_RETRIES = 5
# Events that change an instance's lifecycle; exec_*, attach, health_status ... are noise to the
# controller (every command probe would otherwise trigger a reconcile).
LIFECYCLE_ACTIONS = frozenset(
    {"create", "start", "restart", "die", "kill", "oom", "stop", "destroy", "pause", "unpause"}
)
# other_installations() answers from a full listing this recent (the resync makes one each
# period) instead of listing every managed container once more.
_OTHERS_FRESH_SECONDS = 30.0
# An installation id goes into label values and container names.
_INSTALLATION_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
NAME_PREFIX_LENGTH = 8
_TCP = re.compile(r"^(tcp|http|https)://")
_HOSTNAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATUS = {
    "created": InstanceStatus.CREATED,
    "running": InstanceStatus.RUNNING,
    "exited": InstanceStatus.EXITED,
    "dead": InstanceStatus.EXITED,
}


def parse_docker_time(text: str | None) -> datetime | None:
    """Docker's RFC 3339 timestamps (nanoseconds, ``Z``) as aware datetimes; the zero time is None."""
    if not text:
        return None
    match = _TIMESTAMP.match(text)
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    if whole.startswith("0001-"):
        return None  # Go's zero time: "never"
    micro = (fraction or "0")[:6].ljust(6, "0")
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{whole}.{micro}{zone}").astimezone(UTC)


def _root_cause(exc: BaseException) -> str:
    """The most telling message in an exception chain (urllib3 and requests wrap the OSError)."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        stack.extend(a for a in current.args if isinstance(a, BaseException))
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)
    return str(exc)


def _status_code(exc: docker.errors.APIError) -> int | None:
    return exc.response.status_code if exc.response is not None else None


class Owner(Enum):
    """Whose a container is, from its labels (which never change)."""

    OURS = "ours"
    LEGACY = "legacy"  # kiln-managed, no installation label: made by a kiln from before ids
    OTHER = "other"  # another installation's, or not kiln's at all: never touched


def owner(labels: dict[str, str] | None, installation_id: str) -> Owner:
    labels = labels or {}
    if labels.get(LABEL_MANAGED) != "true":
        return Owner.OTHER
    if LABEL_INSTALLATION not in labels:
        return Owner.LEGACY
    # An empty or different id is not ours; only a missing label means "from before ids".
    return Owner.OURS if labels[LABEL_INSTALLATION] == installation_id else Owner.OTHER


def _installations(summaries: list[dict[str, Any]]) -> set[str]:
    """The installation ids of kiln-managed containers in a listing."""
    ids = {(s.get("Labels") or {}).get(LABEL_INSTALLATION, "") for s in summaries}
    return {i for i in ids if i}


def engine_container_name(installation_id: str, name: str) -> str:
    """The container's name on the engine: two installations' names never clash."""
    return f"kiln-{installation_id[:NAME_PREFIX_LENGTH]}-{name}"


@dataclass(frozen=True)
class _StateDetails:
    """What ``GET /containers/json`` does not say; fixed for as long as the state is the same."""

    state: str
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    oom_killed: bool


class DockerDriver:
    """kiln's driver for one Docker engine (``DOCKER_HOST`` or ``base_url``)."""

    name = "docker"
    placement: Placement = "instances"

    async def scale_group(self, group: ScaleGroup) -> None:
        raise PermanentFailure(
            "the docker driver places instances one by one; it takes no group targets"
        )

    def __init__(
        self,
        *,
        installation_id: str,
        base_url: str | None = None,
        timeout: float = 30,
        bridge_path: str = "auto",
        secrets_root: Path | None = None,
    ) -> None:
        if not _INSTALLATION_ID.match(installation_id):
            raise InvalidInput(
                f"installation id {installation_id!r} must be letters, digits, '_', '.' or '-'"
                " (config.read_or_create_installation_id makes one)"
            )
        self.installation_id = installation_id
        if bridge_path not in BRIDGE_PATHS:
            raise InvalidInput(
                f"the bridge path must be one of {', '.join(BRIDGE_PATHS)}, got {bridge_path!r}"
            )
        self.bridge_path = bridge_path
        self._bridge: _Bridge | None = None  # the engine's bridge, looked at once
        self._explicit_base_url = base_url
        self.base_url = base_url or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="kiln-docker")
        self._client = self._new_client(timeout)
        # Followed logs may stay silent for longer than any request timeout: their own client,
        # without a read timeout (the SDK's logs() takes no per-call timeout).
        self._stream_client: docker.DockerClient | None = None
        self._stream_client_lock = threading.Lock()
        self._aio_client: aiodocker.Docker | None = None  # exec and streams; see _aio()
        self._details: dict[str, _StateDetails] = {}
        # (when, ids): the other installations the last full listing saw
        self._others_listed: tuple[float, set[str]] = (-math.inf, set())
        # container id → instance id, for containers that are ours or legacy (labels never change)
        self._instance_ids: dict[str, str] = {}
        self._image_configs: dict[str, dict[str, Any]] = {}
        self._closed = False
        # Secret files: one directory per instance on a memory file system (see secret_files).
        self._secret_files = SecretFiles(
            secrets_root or Path("/dev/shm") / f"kiln-{installation_id}"
        )

    def _new_client(self, timeout: float | None) -> docker.DockerClient:
        options: dict[str, Any] = {
            "version": API_VERSION,
            "timeout": timeout,
            "max_pool_size": WORKERS * 2,  # requests beyond the pool would open throwaway sockets
        }
        try:
            if self._explicit_base_url is None:
                return docker.from_env(**options)  # also honours DOCKER_TLS_VERIFY / CERT_PATH
            return docker.DockerClient(base_url=self._explicit_base_url, **options)
        except docker.errors.DockerException as exc:
            raise DriverUnavailable(
                f"Docker engine at {self.base_url} cannot be used: {exc}; fix DOCKER_HOST"
            ) from exc

    def _streams(self) -> docker.DockerClient:
        with self._stream_client_lock:
            if self._stream_client is None:
                self._stream_client = self._new_client(None)
            return self._stream_client

    # --- error mapping and threading -------------------------------------------------------

    def _map_error(self, exc: BaseException, what: str) -> KilnError:
        if isinstance(exc, KilnError):
            return exc
        if isinstance(exc, aiodocker.DockerError):
            if exc.status == 900:  # aiodocker's "cannot connect"
                return DriverUnavailable(
                    f"Docker engine at {self.base_url} does not answer: {_root_cause(exc)};"
                    " start it or set DOCKER_HOST"
                )
            if exc.status == 404 and "no such image" in exc.message.lower():
                return ImageNotFound(f"{what}: the engine has no such image ({exc.message})")
            if exc.status == 404:
                return NotFound(f"{what}: {exc.message}")
            return TemporaryFailure(f"{what}: the Docker engine said: {exc.message}")
        if isinstance(exc, aiohttp.ClientError) and not isinstance(
            exc, aiohttp.ClientConnectionError
        ):
            return TemporaryFailure(f"{what}: {exc}")
        if isinstance(exc, docker.errors.ImageNotFound):
            return ImageNotFound(f"{what}: the engine has no such image ({exc.explanation})")
        if isinstance(exc, docker.errors.NotFound):
            return NotFound(f"{what}: {exc.explanation}")
        if isinstance(exc, docker.errors.APIError):
            return TemporaryFailure(f"{what}: the Docker engine said: {exc.explanation or exc}")
        if isinstance(exc, requests.exceptions.Timeout | TimeoutError):
            return DriverUnavailable(
                f"Docker engine at {self.base_url} does not answer: no reply within"
                f" {self.timeout:g}s ({what}); check that it is healthy or set DOCKER_HOST"
            )
        if isinstance(
            exc,
            requests.exceptions.ConnectionError
            | aiohttp.ClientConnectionError
            | ConnectionError
            | OSError,
        ):
            return DriverUnavailable(
                f"Docker engine at {self.base_url} does not answer: {_root_cause(exc)};"
                " start it or set DOCKER_HOST"
            )
        if isinstance(exc, docker.errors.DockerException | requests.exceptions.RequestException):
            return TemporaryFailure(f"{what}: {exc}")
        return TemporaryFailure(f"{what}: unexpected {type(exc).__name__}: {exc}")

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        if self._closed:
            raise TemporaryFailure(f"{what}: the Docker driver is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn)
        except Exception as exc:
            raise self._map_error(exc, what) from exc

    # --- the Driver protocol ---------------------------------------------------------------

    async def ping(self) -> None:
        await self._call("ping", self._client.api.ping)

    async def resolve_image(self, reference: str) -> str:
        return await self._call(f"resolve image {reference!r}", lambda: self._resolve(reference))

    def _resolve(self, reference: str) -> str:
        api = self._client.api
        try:
            image_id: str = api.inspect_image(reference)["Id"]
            return image_id
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if _status_code(exc) == 400:  # "invalid reference format"
                raise ImageNotFound(
                    f"{reference!r} is not a valid image reference: {exc.explanation}"
                ) from exc
            raise
        # Locally built images have no RepoDigests: name@sha256:X also matches the image whose
        # id is sha256:X.
        _, at, digest = reference.rpartition("@")
        if at and digest.startswith("sha256:"):
            with contextlib.suppress(docker.errors.NotFound):
                found: str = api.inspect_image(digest)["Id"]
                if found == digest:
                    return found
        raise ImageNotFound(
            f"image {reference!r} does not exist on the Docker engine at {self.base_url}:"
            " build it (`kiln build`, docker build) or load it there first"
        )

    async def list_instances(self, key: AppKey | None = None) -> list[Instance]:
        labels = [f"{LABEL_MANAGED}=true"]
        if key is not None:  # the engine filters: one app's round lists one app's containers
            labels += [f"{LABEL_ENV}={key.environment}", f"{LABEL_APP}={key.app}"]
        swept_since = self._secret_files.mark()  # before the listing: see SecretFiles.sweep
        found: list[dict[str, Any]] = await self._call(
            "list containers",
            lambda: self._client.api.containers(all=True, filters={"label": labels}),
        )
        # Another installation's containers go no further: not inspected, not cached, not listed.
        summaries = [
            s for s in found if owner(s.get("Labels"), self.installation_id) is not Owner.OTHER
        ]
        stale = [
            s["Id"]
            for s in summaries
            if s["Id"] not in self._details or self._details[s["Id"]].state != s["State"]
        ]
        if stale:
            fetched = await asyncio.gather(*(self._inspect_details(cid) for cid in stale))
            for cid, details in zip(stale, fetched, strict=True):
                if details is not None:
                    self._details[cid] = details
        if key is None:  # only a full listing knows which containers are gone
            self._others_listed = (time.monotonic(), _installations(found) - {self.installation_id})
            present = {s["Id"] for s in summaries}
            for cid in set(self._details) - present:
                del self._details[cid]
            for cid in set(self._instance_ids) - present:
                del self._instance_ids[cid]
            # Secrets of containers removed while no kiln ran (a crash) leave memory too.
            names = {n.lstrip("/") for s in found for n in s.get("Names") or ()}
            self._secret_files.sweep(names, since=swept_since)
        instances = []
        for summary in summaries:
            instance = self._instance(
                summary["Id"],
                summary.get("Labels"),
                summary.get("State", ""),
                self._details.get(summary["Id"]),
                _summary_address(summary),
            )
            if instance is not None:
                instances.append(instance)
        return instances

    async def inspect_instance(self, container_id: str) -> Instance | None:
        # Gone: its caches go with the next full listing, as for any removed container.
        info = await self._inspect(container_id)
        return None if info is None else self._instance_from_inspect(info)

    def _instance_from_inspect(self, info: dict[str, Any]) -> Instance | None:
        details = self._details_from_inspect(info)
        self._details[info["Id"]] = details
        config = info.get("Config") or {}
        return self._instance(
            info["Id"], config.get("Labels"), details.state, details, _inspect_address(info)
        )

    async def _inspect_details(self, container_id: str) -> _StateDetails | None:
        info = await self._inspect(container_id)  # None: removed between the list and this
        return None if info is None else self._details_from_inspect(info)

    async def _inspect(self, container_id: str) -> dict[str, Any] | None:
        """The engine's inspect of a container; None when it is gone."""
        try:
            info: dict[str, Any] = await self._call(
                f"inspect container {container_id[:12]}",
                lambda: self._client.api.inspect_container(container_id),
            )
        except NotFound:
            return None
        return info

    @staticmethod
    def _details_from_inspect(info: dict[str, Any]) -> _StateDetails:
        state = info.get("State") or {}
        status = state.get("Status", "")
        exited = _STATUS.get(status) is InstanceStatus.EXITED
        return _StateDetails(
            state=status,
            started_at=parse_docker_time(state.get("StartedAt")),
            finished_at=parse_docker_time(state.get("FinishedAt")) if exited else None,
            exit_code=state.get("ExitCode") if exited else None,
            oom_killed=bool(state.get("OOMKilled")),
        )

    def _instance(
        self,
        container_id: str,
        labels: dict[str, str] | None,
        state: str,
        details: _StateDetails | None,
        address: Address | None,
    ) -> Instance | None:
        """The instance a container of ours (or a legacy one) is, from its labels and state;
        None for a container that is not kiln's or lacks kiln's labels."""
        ownership = owner(labels, self.installation_id)
        identity = _identity(labels)
        if ownership is Owner.OTHER:
            return None
        if identity is None:
            log.warning(
                "container %s is labelled %s=true but lacks kiln's other labels; ignored",
                container_id[:12],
                LABEL_MANAGED,
            )
            return None
        instance_id, key, release = identity
        self._instance_ids[container_id] = instance_id
        status = _STATUS.get(state, InstanceStatus.UNKNOWN)
        return Instance(
            id=instance_id,
            key=key,
            release=release,
            container_id=container_id,
            status=status,
            # A stopped container keeps its port bindings in inspect, but has no address.
            address=address if status is InstanceStatus.RUNNING else None,
            started_at=details.started_at if details else None,
            finished_at=details.finished_at if details else None,
            exit_code=details.exit_code if details else None,
            oom_killed=details.oom_killed if details else False,
            legacy=ownership is Owner.LEGACY,
        )

    async def start_instance(
        self, spec: InstanceSpec, *, secrets: Mapping[str, bytes] | None = None
    ) -> Instance:
        values = dict(secrets or {})
        missing = [ref.name for ref in spec.secrets if ref.name not in values]
        if missing:
            raise PermanentFailure(f"instance {spec.id}: no value given for secret(s) {missing}")
        info = await self._call(f"start instance {spec.id}", lambda: self._start(spec, values))
        instance = self._instance_from_inspect(info)
        if instance is None:  # we just labelled it ourselves
            raise TemporaryFailure(f"container {info['Id'][:12]} lacks kiln's labels")
        return instance

    def container_name(self, spec: InstanceSpec) -> str:
        """The name ``spec``'s container has on the engine."""
        return engine_container_name(self.installation_id, spec.name)

    def _create_kwargs(
        self,
        spec: InstanceSpec,
        values: Mapping[str, bytes] | None = None,
        *,
        host_port: int | None = None,
    ) -> dict[str, Any]:
        """What ``create_container`` is given for ``spec``; ``host_port``: the port a host-network
        instance got (default: a free one now); ``values``: the secrets' plaintext (file secrets
        are written to the instance's directory on a memory file system)."""
        api = self._client.api
        # values None: describe only (the drift check) — no secret is written or expected.
        describe = values is None
        values = values or {}
        labels = {
            **spec.labels,
            LABEL_MANAGED: "true",
            LABEL_INSTALLATION: self.installation_id,  # last: a spec cannot claim another's id
            LABEL_ENV: spec.key.environment,
            LABEL_APP: spec.key.app,
            LABEL_RELEASE: str(spec.release),
            LABEL_INSTANCE: spec.id,
        }
        env = dict(spec.env)
        if spec.port is not None:
            env["PORT"] = str(spec.port)
        if spec.host_network and spec.port is not None and host_port is None:
            host_port = _free_host_port()
        elif not spec.host_network or spec.port is None:
            host_port = None
        if host_port is not None:
            # Host networking: no network namespace to build (starts ~0.2 s faster); the app
            # listens where kiln says, on loopback only.
            env["PORT"] = str(host_port)
            env["HOST"] = "127.0.0.1"
            labels[LABEL_HOST_PORT] = str(host_port)
        binds: dict[str, dict[str, str]] = {}
        for ref in spec.secrets:
            if ref.as_env and not describe:
                env[ref.name] = _env_value(ref.name, values[ref.name])
        files = {ref.name: values.get(ref.name, b"") for ref in spec.secrets if not ref.as_env}
        if files and describe:
            directory = self._secret_files.directory(self.container_name(spec))
            binds[str(directory)] = {"bind": SECRETS_MOUNT, "mode": "ro"}
        elif files:
            if not self.base_url.startswith("unix://"):
                raise PermanentFailure(
                    f"file secrets need the Docker engine on kiln's own host, and {self.base_url}"
                    " is not a local socket: use `as: env` for these secrets, or run kiln there"
                )
            directory = self._secret_files.write(self.container_name(spec), files)
            binds[str(directory)] = {"bind": SECRETS_MOUNT, "mode": "ro"}
        for volume in spec.volumes:
            binds[self.volume_name(spec.key, volume.name)] = {
                "bind": volume.path,
                "mode": "ro" if volume.read_only else "rw",
            }
        tmpfs = {}
        for entry in spec.tmpfs:
            path, _, options = entry.partition(":")
            tmpfs[path] = options or TMPFS_OPTIONS
        host_config = api.create_host_config(
            init=True,  # a PID 1 that ignores SIGTERM would make every stop wait the whole grace
            read_only=spec.read_only,
            tmpfs=tmpfs or None,
            security_opt=["no-new-privileges"],
            cap_drop=["ALL"],
            cap_add=list(spec.cap_add) or None,
            nano_cpus=round(spec.cpus * 1e9) if spec.cpus else None,
            mem_limit=spec.memory_bytes,
            memswap_limit=spec.memory_bytes,  # equal: no swap on top of the limit
            pids_limit=spec.pids_limit,  # a fork bomb stops at the limit, not at the host's
            # kiln replaces a crashed instance itself; one is never restarted in place.
            restart_policy={"Name": "no"},
            log_config=LogConfig(type=LogConfig.types.JSON, config=LOG_OPTIONS),
            port_bindings=(
                {f"{spec.port}/tcp": ("127.0.0.1", None)}
                if spec.port is not None and not spec.host_network and not self._direct()
                else None
            ),
            network_mode="host" if spec.host_network else None,
            binds=binds or None,
        )
        return {
            "image": spec.image,
            "command": list(spec.command) if spec.command else None,
            "name": self.container_name(spec),
            "labels": labels,
            "user": spec.user,  # None: the image's own default user
            "environment": env,
            "host_config": host_config,
            "ports": [spec.port] if spec.port is not None and not spec.host_network else None,
            "stop_signal": "SIGTERM",
            "stop_timeout": math.ceil(spec.stop_grace),
            # The instance id as hostname: what the app logs and shows is then kiln's own name.
            "hostname": spec.id if _HOSTNAME.match(spec.id) else None,
        }

    def _start(self, spec: InstanceSpec, values: Mapping[str, bytes]) -> dict[str, Any]:
        api = self._client.api
        name = self.container_name(spec)
        try:
            self._ensure_volumes(spec)
            kwargs = self._create_kwargs(spec, values)
            try:
                created = api.create_container(**kwargs)
            except docker.errors.APIError as exc:
                if _status_code(exc) != 409:
                    raise
                self._remove_stale(kwargs["name"], exc)
                created = api.create_container(**kwargs)
            self._secret_files.created(name)  # a full listing may sweep it once it misses it
        except BaseException:
            self._secret_files.remove(name)
            raise
        container_id = created["Id"]
        try:
            if any(not ref.as_env for ref in spec.secrets):
                uid, gid = self._instance_user(container_id, spec)
                SecretFiles.hand_over(self._secret_files.directory(name), uid, gid)
            self._start_created(container_id)
            info: dict[str, Any] = api.inspect_container(container_id)
        except BaseException:
            # A container that never started would look like a crash to the next reconcile.
            with contextlib.suppress(Exception):
                api.remove_container(container_id, force=True, v=True)
            self._secret_files.remove(name)
            raise
        return info

    # --- volumes ----------------------------------------------------------------------------

    def volume_name(self, key: AppKey, volume: str) -> str:
        """A volume's name on the engine: installation, environment, app and volume."""
        return (
            f"kiln-{self.installation_id[:NAME_PREFIX_LENGTH]}-{key.environment}-{key.app}-{volume}"
        )

    def _ensure_volumes(self, spec: InstanceSpec) -> None:
        """Create the app's volumes that do not exist yet, labelled as this installation's."""
        api = self._client.api
        for volume in spec.volumes:
            name = self.volume_name(spec.key, volume.name)
            try:
                info = api.inspect_volume(name)
            except docker.errors.NotFound:
                api.create_volume(name, labels=self._volume_labels(spec.key, volume.name))
                continue
            labels = info.get("Labels") or {}
            if labels.get(LABEL_INSTALLATION) != self.installation_id:
                raise Conflict(
                    f"volume {name} exists but this kiln installation did not make it; kiln"
                    " never uses another's volume: remove or rename it"
                )

    async def list_volumes(self, key: AppKey | None = None) -> list[VolumeInfo]:
        def read() -> list[VolumeInfo]:
            filters = [f"{LABEL_INSTALLATION}={self.installation_id}", f"{LABEL_MANAGED}=true"]
            if key is not None:
                filters += [f"{LABEL_ENV}={key.environment}", f"{LABEL_APP}={key.app}"]
            answer = self._client.api.volumes(filters={"label": filters}) or {}
            found = []
            for raw in answer.get("Volumes") or []:
                labels = raw.get("Labels") or {}
                if labels.get(LABEL_INSTALLATION) != self.installation_id:
                    continue  # the engine filters; belt and braces for invariant 9
                found.append(
                    VolumeInfo(
                        key=AppKey(labels.get(LABEL_ENV, ""), labels.get(LABEL_APP, "")),
                        name=labels.get(LABEL_VOLUME, raw["Name"]),
                        engine_name=raw["Name"],
                        created_at=parse_docker_time(raw.get("CreatedAt")),
                    )
                )
            return sorted(found, key=lambda v: (str(v.key), v.name))

        return await self._call("list volumes", read)

    def _our_volume(self, key: AppKey, name: str) -> str:
        engine_name = self.volume_name(key, name)
        try:
            info = self._client.api.inspect_volume(engine_name)
        except docker.errors.NotFound:
            raise NotFound(
                f"{key} has no volume {name} on the engine (`kiln volume ls {key}`)"
            ) from None
        if (info.get("Labels") or {}).get(LABEL_INSTALLATION) != self.installation_id:
            raise Conflict(f"volume {engine_name} is not this kiln installation's; kiln leaves it")
        return engine_name

    async def remove_volume(self, key: AppKey, name: str) -> None:
        def remove() -> None:
            engine_name = self._our_volume(key, name)
            try:
                self._client.api.remove_volume(engine_name)
            except docker.errors.APIError as exc:
                if _status_code(exc) == 409:
                    raise Conflict(
                        f"volume {name} of {key} is in use by a container: stop the app first"
                    ) from exc
                raise

        await self._call(f"remove volume {name} of {key}", remove)

    def _helper(self, key: AppKey, engine_name: str, image: str) -> str:
        """A container that is created and never started: Docker mounts its volumes for
        archive copies, so nothing runs while the files are copied."""
        created = self._client.api.create_container(
            image,
            command=["kiln-volume-copy"],  # never run
            # Not io.kiln.managed: it is no instance, and lives only for the copy.
            labels={LABEL_INSTALLATION: self.installation_id, LABEL_VOLUME: engine_name},
            host_config=self._client.api.create_host_config(
                binds={engine_name: {"bind": VOLUME_COPY_PATH, "mode": "rw"}},
                network_mode="none",
            ),
        )
        return str(created["Id"])

    async def export_volume(
        self, key: AppKey, name: str, *, image: str, into: Path, progress: Progress
    ) -> tuple[int, str]:
        def export() -> tuple[int, str]:
            engine_name = self._our_volume(key, name)
            helper = self._helper(key, engine_name, image)
            digest = hashlib.sha256()
            size = 0
            try:
                stream, _ = self._client.api.get_archive(
                    helper, VOLUME_COPY_PATH + "/.", chunk_size=COPY_CHUNK
                )
                with into.open("wb") as out:
                    for chunk in stream:
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                        progress(size)
                    out.flush()
                    os.fsync(out.fileno())
            finally:
                self._remove_quietly(helper)
            return size, digest.hexdigest()

        return await self._call(f"copy volume {name} of {key}", export)

    async def import_volume(
        self, key: AppKey, name: str, *, image: str, source: Path, progress: Progress
    ) -> None:
        def restore() -> None:
            api = self._client.api
            engine_name = self._our_volume(key, name)
            try:
                api.remove_volume(engine_name)  # a fresh volume: nothing old survives
            except docker.errors.APIError as exc:
                if _status_code(exc) == 409:
                    raise Conflict(
                        f"volume {name} of {key} is in use by a container: stop the app first"
                    ) from exc
                raise
            api.create_volume(engine_name, labels=self._volume_labels(key, name))
            helper = self._helper(key, engine_name, image)

            def chunks() -> Iterator[bytes]:
                done = 0
                with source.open("rb") as handle:
                    while chunk := handle.read(COPY_CHUNK):
                        done += len(chunk)
                        progress(done)
                        yield chunk

            try:
                # The archive holds the volume's top directory as "./": extract it there.
                api.put_archive(helper, VOLUME_COPY_PATH, chunks())
            finally:
                self._remove_quietly(helper)

        await self._call(f"restore volume {name} of {key}", restore)

    def _volume_labels(self, key: AppKey, volume: str) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true",
            LABEL_INSTALLATION: self.installation_id,
            LABEL_ENV: key.environment,
            LABEL_APP: key.app,
            LABEL_VOLUME: volume,
        }

    def _instance_user(self, container_id: str, spec: InstanceSpec) -> tuple[int, int]:
        """The uid and gid the instance runs as: the spec's user, else the image's, else root;
        names are looked up in the image's /etc/passwd and /etc/group."""
        user = spec.user
        if not user:
            image = self._client.api.inspect_image(spec.image)
            user = (image.get("Config") or {}).get("User") or "0"
        name, _, group = user.partition(":")
        passwd = (
            self._image_table(container_id, "/etc/passwd")
            if not (name.isdigit() and group.isdigit())
            else []
        )
        uid = gid = None
        for row in passwd:
            if len(row) > 3 and (row[0] == name or row[2] == name):
                uid, gid = int(row[2]), int(row[3])
                break
        if uid is None:
            if not name.isdigit():
                raise PermanentFailure(
                    f"instance {spec.id} runs as user {name!r}, which the image's /etc/passwd"
                    " does not name: its secret files cannot be given to it; use a numeric uid"
                )
            uid, gid = int(name), gid if gid is not None else 0
        if group:
            if group.isdigit():
                gid = int(group)
            else:
                rows = self._image_table(container_id, "/etc/group")
                found = [int(r[2]) for r in rows if len(r) > 2 and r[0] == group]
                if not found:
                    raise PermanentFailure(
                        f"instance {spec.id} runs as group {group!r}, which the image's"
                        " /etc/group does not name; use a numeric gid"
                    )
                gid = found[0]
        return uid, gid if gid is not None else 0

    def _image_table(self, container_id: str, path: str) -> list[list[str]]:
        """The rows of a colon-separated file of the (created, not started) container."""
        try:
            stream, _ = self._client.api.get_archive(container_id, path)
        except docker.errors.NotFound:
            return []
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            member = archive.next()
            handle = archive.extractfile(member) if member is not None else None
            text = handle.read().decode(errors="replace") if handle is not None else ""
        return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]

    def _start_created(self, container_id: str) -> None:
        """Start a created container, again when no published port could be bound.

        The engine picks ephemeral ports in order from its own records and gives up after 10
        that another process holds; the containers of another engine on this host hold runs of
        them. Each new start goes on from where the last one stopped.
        """
        for attempt in range(1, PORT_TAKEN_RETRIES + 1):
            try:
                self._client.api.start(container_id)
                return
            except docker.errors.APIError as exc:
                if attempt == PORT_TAKEN_RETRIES or not _port_taken(exc):
                    raise
                log.info("container %s: %s; starting it again", container_id[:12], exc.explanation)

    def _remove_stale(self, name: str, conflict: docker.errors.APIError) -> None:
        """A left-over container holds ``name``: remove it if it is ours and not running."""
        api = self._client.api
        try:
            info = api.inspect_container(name)
        except docker.errors.NotFound:
            return  # it went away in the meantime
        labels = (info.get("Config") or {}).get("Labels") or {}
        running = (info.get("State") or {}).get("Running", False)
        held_by = f"cannot start {name}: the name is taken by container {info['Id'][:12]}"
        ownership = owner(labels, self.installation_id)
        if ownership is Owner.OTHER and labels.get(LABEL_INSTALLATION):
            raise Conflict(
                f"{held_by} of another kiln installation ({labels[LABEL_INSTALLATION]}), whose id"
                f" starts like this one's ({self.installation_id}); kiln never touches another"
                " installation's containers: give this installation a new id (a new KILN_HOME)"
                " or run it on another engine"
            ) from conflict
        if ownership is not Owner.OURS:
            raise Conflict(
                f"{held_by}, which this kiln installation did not make;"
                " remove or rename that container"
            ) from conflict
        if running:
            raise Conflict(
                f"{held_by}, a running instance of this kiln installation: is a second kiln"
                f" server running with the same KILN_HOME? Stop it"
            ) from conflict
        log.info("removing stale container %s (%s) to reuse its name", name, info["Id"][:12])
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_container(info["Id"], force=True, v=True)

    async def stop_instance(self, container_id: str, *, grace: float) -> None:
        def stop() -> None:
            name = self._may_touch(container_id, "stop")
            if not name:
                return
            with contextlib.suppress(docker.errors.NotFound):
                self._client.api.stop(container_id, timeout=math.ceil(grace))
            self._remove_quietly(container_id)
            self._secret_files.remove(name)

        await self._call(f"stop container {container_id[:12]}", stop)
        self._forget(container_id)

    async def remove_instance(self, container_id: str) -> bool:
        def remove() -> bool:
            name = self._may_touch(container_id, "remove")
            if not name:
                return False
            try:
                info = self._client.api.inspect_container(container_id)
            except docker.errors.NotFound:
                return False
            if (info.get("State") or {}).get("Status") == "removing":
                return False  # someone else's `docker rm` is under way: not kiln's removal
            self._remove_quietly(container_id)
            self._secret_files.remove(name)
            return True

        removed = await self._call(f"remove container {container_id[:12]}", remove)
        self._forget(container_id)
        return removed

    def _may_touch(self, container_id: str, verb: str) -> str | None:
        """True for a container of ours or a legacy one; False when it is gone already.

        Asks the engine, not a cache: labels never change, and a stop is rare enough that one
        inspect more is the cheapest way to be sure another installation's container is safe.
        """
        try:
            info = self._client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        labels = (info.get("Config") or {}).get("Labels")
        if owner(labels, self.installation_id) is Owner.OTHER:
            whose = (labels or {}).get(LABEL_INSTALLATION)
            raise Conflict(
                f"will not {verb} container {container_id[:12]}: it belongs to "
                + (f"another kiln installation ({whose})" if whose else "no kiln installation")
                + "; kiln touches only the containers its own installation made"
            )
        return str(info.get("Name") or container_id).lstrip("/")

    def _forget(self, container_id: str) -> None:
        # On the event loop only: the caches are read there without a lock.
        self._details.pop(container_id, None)
        self._instance_ids.pop(container_id, None)

    def _remove_quietly(self, container_id: str) -> None:
        try:
            self._client.api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            # Two removals racing: the second hears "removal already in progress".
            if _status_code(exc) != 409 or "in progress" not in str(exc.explanation):
                raise

    async def drift(self, container_id: str, expected: InstanceSpec) -> list[str]:
        return await self._call(
            f"check container {container_id[:12]} for drift",
            lambda: self._drift(container_id, expected),
        )

    def _drift(self, container_id: str, spec: InstanceSpec) -> list[str]:
        api = self._client.api
        info: dict[str, Any] = api.inspect_container(container_id)
        config = info.get("Config") or {}
        host = info.get("HostConfig") or {}
        labels = config.get("Labels") or {}
        if owner(labels, self.installation_id) is Owner.OTHER:
            raise NotFound(f"container {container_id[:12]} is not this installation's")
        port_label = labels.get(LABEL_HOST_PORT, "")
        want = self._create_kwargs(
            spec, host_port=int(port_label) if port_label.isdigit() else None
        )
        want_host = want["host_config"]
        image = self._image_config(info.get("Image", ""))
        found: list[str] = []
        if config.get("Image") != want["image"] or (
            want["image"].startswith("sha256:") and info.get("Image") != want["image"]
        ):
            found.append(
                f"image: runs {_short(info.get('Image'))}, the release has {_short(want['image'])}"
            )
        # Env secrets: kiln holds no plaintext here to compare, so their names are left out.
        secret_env = {ref.name for ref in spec.secrets if ref.as_env}
        actual_env = [e for e in config.get("Env") or [] if e.partition("=")[0] not in secret_env]
        found += _env_drift(actual_env, want["environment"], image.get("Env") or [])
        command = want["command"] if want["command"] is not None else image.get("Cmd")
        if (config.get("Cmd") or None) != (command or None):
            found.append("command differs from the release's")
        if (config.get("Entrypoint") or None) != (image.get("Entrypoint") or None):
            found.append("entrypoint differs from the image's")
        if (config.get("User") or "") != (want["user"] or image.get("User") or ""):
            found.append(f"user: {config.get('User') or '(image default)'!s}, not the release's")
        image_labels = image.get("Labels") or {}
        for name, value in want["labels"].items():
            if labels.get(name) != value:
                found.append(f"label {name} differs from the release's")
        for name, value in labels.items():
            if name not in want["labels"] and image_labels.get(name) != value:
                found.append(f"label {name} is not in the release")
        writable = {path.partition(":")[0].rstrip("/") for path in spec.tmpfs}
        declared = {*(image.get("Volumes") or {}), *writable, *(v.path for v in spec.volumes)}
        if any(not ref.as_env for ref in spec.secrets):
            declared.add(SECRETS_MOUNT)
        read_only = {v.path: v.read_only for v in spec.volumes}
        for mount in info.get("Mounts") or []:
            destination = mount.get("Destination", "").rstrip("/")
            if destination not in declared:
                found.append(
                    f"mount {mount.get('Destination')} ({mount.get('Type')}) is not in the release"
                )
            elif destination in read_only and bool(mount.get("RW", True)) == read_only[destination]:
                mode = "read-write" if mount.get("RW", True) else "read-only"
                says = "read-only" if read_only[destination] else "read-write"
                found.append(f"volume at {destination}: mounted {mode}, the release says {says}")
        if sorted(host.get("Tmpfs") or {}) != sorted(want_host.get("Tmpfs") or {}):
            found.append("tmpfs mounts differ from the release's")
        for field, label in _HOST_FIELDS.items():
            if _norm(host.get(field)) != _norm(want_host.get(field)):
                found.append(
                    f"{label}: {_norm(host.get(field))!s}, the release says {_norm(want_host.get(field))!s}"
                )
        if host.get("Privileged"):
            found.append("runs privileged")
        if not spec.read_only:
            # Mount points (tmpfs, volumes, the engine's init) are made in the container's own
            # layer; what is mounted there is not the root filesystem.
            mounted = {m.get("Destination", "").rstrip("/") for m in info.get("Mounts") or []}
            found += _file_drift(api.diff(container_id) or [], writable | mounted | {_INIT_PATH})
        return found

    def _image_config(self, image_id: str) -> dict[str, Any]:
        """The image's own config (env, cmd, entrypoint, user, volumes), cached: an image id
        names immutable content."""
        cached = self._image_configs.get(image_id)
        if cached is None:
            try:
                cached = self._client.api.inspect_image(image_id).get("Config") or {}
            except docker.errors.NotFound:
                cached = {}
            self._image_configs[image_id] = cached
        return cached

    # --- exec and streams: aiodocker on the event loop -----------------------------------------
    # What waits on the engine for long (followed logs, the event stream, a command's output)
    # is a connection read by the event loop, not a blocked thread: following every instance's
    # logs (LogKeeper) then costs a socket each, not two threads each (bench.driver_eval).

    def _aio(self) -> aiodocker.Docker:
        """The driver's aiodocker client, made on first use (an aiohttp session belongs to the
        loop it was made on; kiln runs one) and closed by ``close()``."""
        if self._closed:
            raise TemporaryFailure("the Docker driver is closed")
        if self._aio_client is None:
            self._aio_client = _aio_client(
                self.base_url, self.timeout, env_tls=self._explicit_base_url is None
            )
        return self._aio_client

    def _stream_timeout(self) -> aiohttp.ClientTimeout:
        # A followed stream may stay silent for hours: only connecting has a deadline.
        return aiohttp.ClientTimeout(
            total=None, sock_read=None, connect=self.timeout, sock_connect=self.timeout
        )

    @contextlib.asynccontextmanager
    async def _open_stream(
        self, what: str, path: str, params: dict[str, Any]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A streamed engine response; errors while opening are mapped, and the response is
        closed on the way out (a stream left half-read cannot go back to the pool)."""
        try:
            # aiodocker's request primitive: its own logs() drops which stream a frame came
            # from, and its events channel is one stream per client.
            response = await self._aio()._do_query(
                path, "GET", params=params, timeout=self._stream_timeout()
            )
        except Exception as exc:
            raise self._map_error(exc, what) from exc
        try:
            yield response
        finally:
            response.close()

    async def exec(self, container_id: str, command: Sequence[str], *, timeout: float) -> int:
        what = f"exec {list(command)!r} in {container_id[:12]}"
        client = self._aio()
        try:
            async with asyncio.timeout(timeout):
                return await self._run_exec(client, container_id, list(command))
        except TimeoutError:
            raise TimeoutError(f"{what}: no exit within {timeout:g}s") from None
        except Exception as exc:
            raise self._map_error(exc, what) from exc

    @staticmethod
    async def _run_exec(client: aiodocker.Docker, container_id: str, command: list[str]) -> int:
        execution = await client.containers.container(container_id).exec(
            command, stdout=True, stderr=True
        )
        stream = execution.start(detach=False)
        try:
            # Read the output away until the command closes it (a full pipe would stall it);
            # a timeout cancels the read and the stream's connection is closed below. The
            # command itself keeps running: Docker cannot kill an exec.
            while await stream.read_out() is not None:
                pass
        finally:
            await stream.close()
        # The exit code is recorded a moment after the output stream ends.
        while True:
            result = await execution.inspect()
            if not result.get("Running") and result.get("ExitCode") is not None:
                return int(result["ExitCode"])
            await asyncio.sleep(0.01)

    def logs(
        self, container_ids: Sequence[str], *, follow: bool, tail: int | None
    ) -> AsyncGenerator[LogLine, None]:
        return self._logs(list(container_ids), follow=follow, tail=tail)

    async def _logs(
        self, container_ids: list[str], *, follow: bool, tail: int | None
    ) -> AsyncGenerator[LogLine, None]:
        instance_ids = [await self._instance_id_of(cid) for cid in container_ids]
        readers = [
            self._container_logs(cid, iid, follow=follow, tail=tail)
            for cid, iid in zip(container_ids, instance_ids, strict=True)
        ]
        if not readers:
            return
        lines = readers[0] if len(readers) == 1 else _merge(readers)
        async with contextlib.aclosing(lines):
            if follow:
                async for line in lines:
                    yield line
                return
            # Each container's lines arrive in order, several containers' side by side: put the
            # whole (bounded: json-file keeps 3 x 10 MB) history in time order.
            history = [line async for line in lines]
        history.sort(key=lambda line: line.at or _EPOCH)
        for line in history:
            yield line

    async def _container_logs(
        self, container_id: str, instance_id: str, *, follow: bool, tail: int | None
    ) -> AsyncGenerator[LogLine, None]:
        """One container's stdout and stderr over one connection (the engine multiplexes them:
        kiln's containers have no TTY), lines split per stream."""
        params = {
            "stdout": True,
            "stderr": True,
            "follow": follow,
            "timestamps": True,
            "tail": "all" if tail is None else str(tail),
        }
        async with self._open_stream(
            f"logs of {container_id[:12]}", f"containers/{container_id}/logs", params
        ) as response:
            pending: dict[int, bytes] = {}
            async for stream, payload in _frames(response):
                name: Literal["stdout", "stderr"] = "stderr" if stream == 2 else "stdout"
                *lines, pending[stream] = (pending.get(stream, b"") + payload).split(b"\n")
                for line in lines:
                    yield _log_line(instance_id, name, line)
            for stream, rest in pending.items():
                if rest:
                    yield _log_line(instance_id, "stderr" if stream == 2 else "stdout", rest)

    async def _instance_id_of(self, container_id: str) -> str:
        """The instance id of a container of ours or a legacy one (listed or started by this
        driver: no engine call); ``NotFound`` for anyone else's."""
        known = self._instance_ids.get(container_id)
        if known is not None:
            return known
        info = await self._call(
            f"inspect container {container_id[:12]}",
            lambda: self._client.api.inspect_container(container_id),
        )
        labels = (info.get("Config") or {}).get("Labels") or {}
        if owner(labels, self.installation_id) is Owner.OTHER:
            raise NotFound(
                f"container {container_id[:12]} is not an instance of this kiln installation"
            )
        instance_id = str(labels.get(LABEL_INSTANCE, container_id[:12]))
        self._instance_ids[info["Id"]] = instance_id
        return instance_id

    def watch(self) -> AsyncGenerator[DriverEvent, None]:
        # The stream opens at the first iteration; asking the engine for events since *now*
        # (whole seconds: a hint may repeat, none is lost) covers the gap until then.
        return self._watch(since=int(time.time()))

    async def _watch(self, *, since: int) -> AsyncGenerator[DriverEvent, None]:
        # Our own containers only, filtered at the engine (legacy ones send no hints; the
        # periodic resync lists them).
        filters = {
            "type": ["container"],
            "label": [f"{LABEL_MANAGED}=true", f"{LABEL_INSTALLATION}={self.installation_id}"],
        }
        params = {"since": str(since), "filters": json.dumps(filters)}
        async with self._open_stream("watch events", "events", params) as response:
            while True:
                try:
                    line = await response.content.readline()
                except (aiohttp.ClientError, OSError) as exc:
                    # The engine went away (stopped, restarted): the caller resyncs.
                    log.info("Docker event stream ended: %s", exc)
                    return
                if not line:
                    return
                try:
                    event = _driver_event(json.loads(line), self.installation_id)
                except ValueError:
                    continue  # not an event (the engine sends one JSON object a line)
                if event is not None:
                    yield event

    def _look_at_bridge(self) -> _Bridge:
        """The engine's default bridge as this host sees it (blocking; once per driver)."""
        if self._bridge is None:
            try:
                network = self._client.api.inspect_network("bridge")
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                # Not remembered: the next container looks again. This one is published,
                # which works wherever the engine is.
                return _Bridge(gateway=None, interface=None, fixed_mac=True)
            gateways = [c.get("Gateway") for c in (network.get("IPAM") or {}).get("Config") or []]
            self._bridge = _Bridge.seen_from_here(next((g for g in gateways if g), None))
        return self._bridge

    def _direct(self) -> bool:
        if self.bridge_path == "auto":
            return self._look_at_bridge().interface is not None
        return self.bridge_path == "direct"

    async def network_notes(self) -> list[str]:
        bridge: _Bridge = await self._call("inspect the bridge network", self._look_at_bridge)
        notes = []
        if self.bridge_path == "direct" and bridge.interface is None:
            notes.append(
                f"KILN_BRIDGE_PATH=direct, but the engine's bridge (gateway {bridge.gateway or '?'})"
                " is not an interface of this host, so NGINX cannot reach instances there; use"
                " KILN_BRIDGE_PATH=auto (published ports when the bridge is out of reach)"
            )
        if bridge.interface is not None and not bridge.fixed_mac:
            notes.append(
                f"the Docker bridge {bridge.interface} has no MAC address of its own: Linux gives"
                " it the lowest of its ports', which changes whenever a container starts or stops,"
                " and connections to instances then stall for seconds. Give it one, e.g."
                f" `ip link set {bridge.interface} address {bridge.suggested_mac}` (dockerd does"
                " this for the bridges it creates; this one was made by hand)"
            )
        return notes

    async def host_notes(self) -> list[str]:
        bridge: _Bridge = await self._call("inspect the bridge network", self._look_at_bridge)
        if bridge.interface is None:
            return []  # the engine runs elsewhere: this host's limits are not its own
        limit = await self._call("read the inotify limit", lambda: _read_int(INOTIFY_INSTANCES))
        if limit is None or limit >= INOTIFY_INSTANCES_ENOUGH:
            return []
        return [
            f"fs.inotify.max_user_instances is {limit}: the Docker engine follows each container's"
            " log (kiln keeps every instance's output) with one inotify instance and polls the"
            f" logs past that every 200 ms, more CPU and slower starts beyond about {limit - 28}"
            " instances; raise it: sysctl -w fs.inotify.max_user_instances=8192"
            " (scripts/bootstrap.sh does, in /etc/sysctl.d/60-kiln.conf)"
        ]

    async def other_installations(self) -> set[str]:
        listed_at, others = self._others_listed
        if time.monotonic() - listed_at < _OTHERS_FRESH_SECONDS:
            return set(others)  # the full listing's (every resync makes one): no second list
        found: list[dict[str, Any]] = await self._call(
            "list other installations' containers",
            lambda: self._client.api.containers(
                all=True, filters={"label": [f"{LABEL_MANAGED}=true", LABEL_INSTALLATION]}
            ),
        )
        return _installations(found) - {self.installation_id}

    async def host_limits(self) -> HostLimits:
        info: dict[str, Any] = await self._call("engine info", self._client.api.info)
        try:
            return HostLimits(cpus=float(info["NCPU"]), memory_bytes=int(info["MemTotal"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise TemporaryFailure(
                f"the Docker engine at {self.base_url} did not say its CPUs and memory ({exc!r})"
            ) from exc

    # --- images ----------------------------------------------------------------------------

    async def image_details(self, reference: str) -> LocalImage:
        def inspect() -> LocalImage:
            info = self._client.api.inspect_image(self._resolve(reference))
            config = info.get("Config") or {}
            return LocalImage(
                id=info["Id"],
                size=int(info.get("Size") or 0),
                labels=dict(config.get("Labels") or {}),
                repo_digests=tuple(info.get("RepoDigests") or ()),
            )

        return await self._call(f"inspect image {reference!r}", inspect)

    async def push_image(
        self, image: str, *, repository: str, tag: str, auth: tuple[str, str] | None
    ) -> str:
        def push() -> str:
            client = self._streams()  # a push may take longer than any request timeout
            client.api.tag(image, repository, tag=tag)
            digest = ""
            for chunk in client.api.push(
                repository, tag=tag, stream=True, decode=True, auth_config=_auth_config(auth)
            ):
                if "error" in chunk:
                    raise TemporaryFailure(
                        f"pushing {repository}:{tag} failed: {str(chunk['error']).strip()}"
                    )
                digest = str((chunk.get("aux") or {}).get("Digest") or digest)
            if not digest.startswith("sha256:"):
                raise TemporaryFailure(f"the engine pushed {repository}:{tag} but named no digest")
            return digest

        return await self._call(f"push {image} to {repository}:{tag}", push)

    async def pull_image(
        self,
        reference: str,
        *,
        auth: tuple[str, str] | None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()

        def say(text: str) -> None:
            if progress is not None:
                loop.call_soon_threadsafe(progress, text)

        def pull() -> None:
            client = self._streams()
            seen: dict[str, str] = {}
            try:
                stream = client.api.pull(
                    reference, stream=True, decode=True, auth_config=_auth_config(auth)
                )
                for chunk in stream:
                    if "error" in chunk:
                        raise _pull_failed(reference, str(chunk["error"]))
                    status, layer = str(chunk.get("status") or ""), str(chunk.get("id") or "")
                    # One line per layer state (not every byte-count tick).
                    if status and seen.get(layer) != status and "Downloading" not in status:
                        seen[layer] = status
                        say(f"{layer}: {status}" if layer else status)
            except docker.errors.APIError as exc:
                if _status_code(exc) == 404:
                    raise _pull_failed(reference, str(exc.explanation or exc)) from exc
                raise

        await self._call(f"pull {reference}", pull)

    async def build_image(
        self,
        context: bytes,
        *,
        tag: str,
        labels: dict[str, str],
        dockerfile: str = "Dockerfile",
        progress: Callable[[str], None] | None = None,
    ) -> str:
        loop = asyncio.get_running_loop()

        def build() -> str:
            client = self._streams()  # a build may take longer than any request timeout
            try:
                stream = client.api.build(
                    fileobj=io.BytesIO(context),
                    custom_context=True,
                    dockerfile=dockerfile,
                    tag=tag,
                    labels=labels,
                    rm=True,
                    forcerm=True,
                    decode=True,
                )
                for chunk in stream:
                    if "error" in chunk:
                        said = str(chunk["error"]).strip()
                        raise InvalidInput(f"the build of {tag} failed: {said}")
                    line = str(chunk.get("stream") or "").rstrip()
                    if line and progress is not None:
                        loop.call_soon_threadsafe(progress, line)
            except docker.errors.APIError as exc:
                if _status_code(exc) in (400, 500):  # a context that is no tar, no Dockerfile
                    raise InvalidInput(
                        f"the engine refused the build of {tag}: {exc.explanation or exc}"
                    ) from exc
                raise
            image_id: str = client.api.inspect_image(tag)["Id"]
            return image_id

        return await self._call(f"build {tag}", build)

    async def stats(self, container_ids: Sequence[str]) -> dict[str, InstanceStats]:
        """From the containers' cgroups when the engine runs on this machine (a few small file
        reads each, no engine call); otherwise one one-shot stats call per container."""
        ids = list(container_ids)
        found = await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(_cgroup_stats, ids)
        )
        for cid in ids:
            if cid in found:
                continue
            try:
                raw: dict[str, Any] = await self._call(
                    "container stats",
                    functools.partial(self._client.api.stats, cid, stream=False, one_shot=True),
                )
            except KilnError:
                continue  # gone meanwhile: no sample this time
            stats = _api_stats(raw)
            if stats is not None:
                found[cid] = stats
        return found

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for client in (self._client, self._stream_client):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._aio_client is not None:
            await self._aio_client.close()
            await self._aio_client.connector.close()  # ours, not aiodocker's (see _aio_client)


def _auth_config(auth: tuple[str, str] | None) -> dict[str, str] | None:
    return {"username": auth[0], "password": auth[1]} if auth else None


def _pull_failed(reference: str, said: str) -> KilnError:
    if "not found" in said or "manifest unknown" in said or "404" in said:
        return ImageNotFound(
            f"the registry does not have {reference} ({said.strip()}); it may have been pruned:"
            " deploy an image that exists (`kiln images` lists them)"
        )
    return TemporaryFailure(f"pulling {reference} failed: {said.strip()}")


_HOST_FIELDS = {
    "ReadonlyRootfs": "read-only root filesystem",
    "NanoCpus": "cpus (nano)",
    "Memory": "memory limit",
    "MemorySwap": "memory+swap limit",
    "PidsLimit": "pids limit",
    "CapAdd": "added capabilities",
    "CapDrop": "dropped capabilities",
    "SecurityOpt": "security options",
    "Binds": "bind mounts",
    "Init": "init",
}
_MAX_FILES_SHOWN = 10
_INIT_PATH = "/sbin/docker-init"  # where the engine mounts its init (``init=True``)
_DIFF_KINDS = {0: "C", 1: "A", 2: "D"}


def _norm(value: Any) -> Any:
    """Engine values as created vs as inspected: unset limits read back as 0 (or -1), empty
    lists as None."""
    if value in (None, 0, -1, False, [], {}):
        return None
    if isinstance(value, list):  # capabilities come back with or without CAP_
        return sorted(str(v).upper().removeprefix("CAP_") for v in value)
    return value


def _short(image: object) -> str:
    text = str(image or "?")
    return text[:19] if text.startswith("sha256:") else text


def _env_drift(actual: list[str], expected: dict[str, str], image_env: list[str]) -> list[str]:
    """Differences by name only: a value may be a secret, so it is never echoed."""
    have = dict(item.partition("=")[::2] for item in actual)
    from_image = dict(item.partition("=")[::2] for item in image_env)
    found = []
    for name, value in expected.items():
        if name not in have:
            found.append(f"env {name} is missing")
        elif have[name] != value:
            found.append(f"env {name} differs from the release")
    for name, value in have.items():
        if name not in expected and from_image.get(name) != value:
            found.append(f"env {name} is not in the release")
    return found


def _file_drift(changes: list[dict[str, Any]], writable: set[str]) -> list[str]:
    """Files changed, added or deleted outside the writable paths. A directory reported only
    because something below it changed is left out (``C /www`` for ``A /www/x``)."""
    paths = [c.get("Path", "") for c in changes]
    kept = []
    for change in changes:
        path = change.get("Path", "")
        if any(path == w or path.startswith(w + "/") or w.startswith(path + "/") for w in writable):
            continue
        if change.get("Kind") == 0 and any(p.startswith(path + "/") for p in paths):
            continue
        kept.append(f"{_DIFF_KINDS.get(change.get('Kind', 0), '?')} {path}")
    if not kept:
        return []
    more = f" (and {len(kept) - _MAX_FILES_SHOWN} more)" if len(kept) > _MAX_FILES_SHOWN else ""
    return [f"files changed outside the writable paths: {', '.join(kept[:_MAX_FILES_SHOWN])}{more}"]


def _identity(labels: dict[str, str] | None) -> tuple[str, AppKey, int] | None:
    labels = labels or {}
    try:
        return (
            labels[LABEL_INSTANCE],
            AppKey(labels[LABEL_ENV], labels[LABEL_APP]),
            int(labels[LABEL_RELEASE]),
        )
    except (KeyError, ValueError):
        return None


def _env_value(name: str, value: bytes) -> str:
    try:
        text = value.decode()
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:
        raise PermanentFailure(
            f"secret {name} is delivered as an environment variable, which holds UTF-8 text"
            " without NUL characters: deliver it as a file (as: file)"
        )
    return text


def _port_taken(exc: docker.errors.APIError) -> bool:
    explanation = str(exc.explanation or "")
    return "address already in use" in explanation or "port is already allocated" in explanation


def _host_network_address(labels: dict[str, str] | None) -> Address | None:
    port = (labels or {}).get(LABEL_HOST_PORT, "")
    return Address("127.0.0.1", int(port)) if port.isdigit() else None


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_INSTANCES_ENOUGH = 1024
"""Below this, a few hundred instances' followed logs exhaust the engine's inotify instances
(bench/README.md, "Scale": dockerd at idle 2.0-2.6 % of a core at 300 instances, 0.8 % with
8192; Debian's default is 128)."""


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class _Bridge:
    """The engine's bridge: its gateway, and the interface of this host that holds it (None: a
    rootless or remote engine, whose containers this host cannot route to)."""

    gateway: str | None
    interface: str | None
    fixed_mac: bool

    @classmethod
    def seen_from_here(cls, gateway: str | None) -> _Bridge:
        interface = None
        if gateway:
            interface = next(
                (
                    name
                    for name, addresses in psutil.net_if_addrs().items()
                    if any(a.family == socket.AF_INET and a.address == gateway for a in addresses)
                ),
                None,
            )
        fixed = True
        if interface is not None:
            # /sys/class/net/*/addr_assign_type: 0 permanent, 1 random, 2 stolen, 3 set.
            # A bridge whose address was never set follows its ports' (see network_notes).
            with contextlib.suppress(OSError):
                fixed = (
                    Path(f"/sys/class/net/{interface}/addr_assign_type").read_text().strip() != "1"
                )
        return cls(gateway, interface, fixed)

    @property
    def suggested_mac(self) -> str:
        octets = [int(part) for part in (self.gateway or "0.0.0.0").split(".")]
        return "02:6b:" + ":".join(f"{octet:02x}" for octet in octets)


def _network_ip(settings: dict[str, Any] | None) -> str | None:
    """The container's address on its (first) bridge network."""
    for network in ((settings or {}).get("Networks") or {}).values():
        if network and network.get("IPAddress"):
            return str(network["IPAddress"])
    return None


def _summary_address(summary: dict[str, Any]) -> Address | None:
    """Where a container from ``GET /containers/json`` is reached: its published TCP port, else
    its address on the bridge and the port it exposes, else the host-network port."""
    ports = [p for p in summary.get("Ports") or [] if p.get("Type", "tcp") == "tcp"]
    for port in ports:
        if port.get("PublicPort"):
            return Address(port.get("IP") or "127.0.0.1", int(port["PublicPort"]))
    ip = _network_ip(summary.get("NetworkSettings"))
    if ip is not None and ports and ports[0].get("PrivatePort"):
        return Address(ip, int(ports[0]["PrivatePort"]))
    return _host_network_address(summary.get("Labels"))


def _inspect_address(info: dict[str, Any]) -> Address | None:
    """The same from an inspect, whose ports are a map of bindings."""
    network = info.get("NetworkSettings") or {}
    ports = network.get("Ports") or {}
    for bindings in ports.values():
        for binding in bindings or []:
            if binding.get("HostPort"):
                return Address(binding.get("HostIp") or "127.0.0.1", int(binding["HostPort"]))
    ip = _network_ip(network)
    exposed = [int(name.split("/")[0]) for name in ports if name.endswith("/tcp")]
    if ip is not None and exposed:
        return Address(ip, exposed[0])
    return _host_network_address((info.get("Config") or {}).get("Labels"))


def _free_host_port() -> int:
    """A port free on loopback now, from a range clear of the kernel's ephemeral ports (which
    docker-proxy and outgoing connections use). Another process could still take it before the
    app binds it; the app then fails to start and kiln replaces it."""
    for _ in range(50):
        port = random.randint(HOST_PORT_RANGE[0], HOST_PORT_RANGE[1])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise TemporaryFailure(f"no free port in {HOST_PORT_RANGE} for a host-network instance")


def _log_line(instance_id: str, stream: Literal["stdout", "stderr"], raw: bytes) -> LogLine:
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    stamp, space, rest = text.partition(" ")
    at = parse_docker_time(stamp) if space else None
    return LogLine(
        instance_id=instance_id,
        at=at,
        stream=stream,
        text=rest if at is not None else text,
    )


def _driver_event(raw: dict[str, Any], installation_id: str) -> DriverEvent | None:
    action = str(raw.get("Action") or raw.get("status") or "").split(":")[0]
    if action not in LIFECYCLE_ACTIONS:
        return None
    actor = raw.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    if owner(attributes, installation_id) is not Owner.OURS:
        return None  # the engine filtered already; this keeps the rule in one place
    try:
        key = AppKey(attributes[LABEL_ENV], attributes[LABEL_APP])
        instance_id = attributes[LABEL_INSTANCE]
    except KeyError:
        return None
    exit_code = attributes.get("exitCode")
    return DriverEvent(
        key=key,
        instance_id=instance_id,
        container_id=actor.get("ID") or raw.get("id", ""),
        action=action,
        exit_code=int(exit_code) if exit_code not in (None, "") else None,
    )


async def _frames(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[int, bytes]]:
    """(stream, payload) of Docker's multiplexed stream format: an 8-byte header (the stream:
    1 stdout, 2 stderr; three zero bytes; the payload's length, big-endian) before each payload.
    Ends at the end of the stream, or when the engine drops the connection."""
    while True:
        try:
            header = await response.content.readexactly(8)
            payload = await response.content.readexactly(int.from_bytes(header[4:8], "big"))
        except (asyncio.IncompleteReadError, aiohttp.ClientError, OSError):
            return
        yield header[0], payload


async def _merge(sources: list[AsyncGenerator[ItemT, None]]) -> AsyncGenerator[ItemT, None]:
    """The items of several async generators as they come, one task each; when the consumer
    leaves, every task is cancelled and every source closed (which closes its stream)."""
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1000)  # a slow consumer slows the sources
    ended = object()

    async def drain(source: AsyncGenerator[ItemT, None]) -> None:
        try:
            async with contextlib.aclosing(source):
                async for item in source:
                    await queue.put(item)
        except Exception as exc:
            await queue.put(exc)
            return
        await queue.put(ended)

    tasks = [asyncio.create_task(drain(source)) for source in sources]
    remaining = len(tasks)
    try:
        while remaining:
            item = await queue.get()
            if item is ended:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _aio_client(base_url: str, timeout: float, *, env_tls: bool) -> aiodocker.Docker:
    """An aiodocker client for ``base_url``, on a connector without a connection limit: each
    followed log holds a connection for as long as it is read (with aiohttp's default of 100,
    the 101st would wait forever)."""
    requests_timeout = aiohttp.ClientTimeout(
        total=None, connect=timeout, sock_connect=timeout, sock_read=timeout
    )
    version = f"v{API_VERSION}"
    if base_url.startswith("unix://"):
        # URLs name no host on a unix socket; aiodocker's own convention is "localhost".
        connector = aiohttp.UnixConnector(base_url.removeprefix("unix://"), limit=0)
        return aiodocker.Docker(
            url="unix://localhost",
            connector=connector,
            api_version=version,
            timeout=requests_timeout,
        )
    if _TCP.match(base_url):
        tls = _tls_context() if env_tls else None
        url = _TCP.sub("https://" if tls is not None else "http://", base_url)
        tcp = aiohttp.TCPConnector(limit=0, ssl=tls if tls is not None else True)
        return aiodocker.Docker(
            url=url, connector=tcp, api_version=version, timeout=requests_timeout
        )
    # ssh:// and the like: aiodocker's own connector.
    return aiodocker.Docker(url=base_url, api_version=version, timeout=requests_timeout)


def _tls_context() -> ssl.SSLContext | None:
    """TLS to a tcp:// engine as the docker CLI (and the SDK's ``from_env``) set it up:
    ``DOCKER_TLS_VERIFY`` and the certificates in ``DOCKER_CERT_PATH`` (default ~/.docker)."""
    if os.environ.get("DOCKER_TLS_VERIFY", "") in ("", "0"):
        return None
    certs = Path(os.environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker")
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / "cert.pem"), str(certs / "key.pem"))
    return context


# --- resource use from cgroups -----------------------------------------------------------------
# Docker's cgroupfs layout: v1 puts a container under <controller>/docker/<id>, v2 under
# docker/<id> (or system.slice/docker-<id>.scope with the systemd cgroup driver).
_CGROUP_ROOT = "/sys/fs/cgroup"


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def _stat_value(text: str | None, name: str) -> int:
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return 0


def _cgroup_stats(container_ids: list[str]) -> dict[str, InstanceStats]:
    found: dict[str, InstanceStats] = {}
    for cid in container_ids:
        stats = _cgroup_v1(cid) or _cgroup_v2(cid)
        if stats is not None:
            found[cid] = stats
    return found


def _cgroup_v1(cid: str) -> InstanceStats | None:
    for cpu_dir in ("cpuacct", "cpu,cpuacct"):
        usage = _read(f"{_CGROUP_ROOT}/{cpu_dir}/docker/{cid}/cpuacct.usage")
        if usage is not None:
            break
    else:
        return None
    memory_dir = f"{_CGROUP_ROOT}/memory/docker/{cid}"
    used = _read(f"{memory_dir}/memory.usage_in_bytes")
    inactive = _stat_value(_read(f"{memory_dir}/memory.stat"), "total_inactive_file")
    memory = max(0, int(used) - inactive) if used is not None else 0
    return InstanceStats(cpu_seconds=int(usage) / 1e9, memory_bytes=memory)


def _cgroup_v2(cid: str) -> InstanceStats | None:
    for directory in (
        f"{_CGROUP_ROOT}/docker/{cid}",
        f"{_CGROUP_ROOT}/system.slice/docker-{cid}.scope",
    ):
        cpu = _read(f"{directory}/cpu.stat")
        if cpu is None:
            continue
        used = _read(f"{directory}/memory.current")
        inactive = _stat_value(_read(f"{directory}/memory.stat"), "inactive_file")
        memory = max(0, int(used) - inactive) if used is not None else 0
        return InstanceStats(cpu_seconds=_stat_value(cpu, "usage_usec") / 1e6, memory_bytes=memory)
    return None


def _api_stats(raw: dict[str, Any]) -> InstanceStats | None:
    """The engine's stats answer (for an engine on another machine)."""
    try:
        cpu = int(raw["cpu_stats"]["cpu_usage"]["total_usage"])
    except (KeyError, TypeError, ValueError):
        return None
    memory = raw.get("memory_stats") or {}
    stats = memory.get("stats") or {}
    cache = int(stats.get("total_inactive_file", stats.get("inactive_file", 0)) or 0)
    # cgroup v1 counts nanoseconds, v2 (through the engine) too: the API normalises it.
    return InstanceStats(
        cpu_seconds=cpu / 1e9, memory_bytes=max(0, int(memory.get("usage", 0) or 0) - cache)
    )
