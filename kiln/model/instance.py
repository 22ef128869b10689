"""Instances: running containers of one release, as the driver sees them and as kiln starts them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from kiln.model.app import AppKey

LABEL_PREFIX = "io.kiln"
LABEL_MANAGED = f"{LABEL_PREFIX}.managed"
LABEL_ENV = f"{LABEL_PREFIX}.environment"
LABEL_APP = f"{LABEL_PREFIX}.app"
LABEL_RELEASE = f"{LABEL_PREFIX}.release"
LABEL_INSTANCE = f"{LABEL_PREFIX}.instance"
LABEL_VOLUME = f"{LABEL_PREFIX}.volume"  # on volumes: the name the spec gives it
LABEL_HOST_PORT = f"{LABEL_PREFIX}.host-port"  # host networking: the port kiln gave the app
# Which kiln installation (home) made the object: its id from ``config.read_or_create_installation_id``.
# A kiln lists, watches, stops and removes only objects with its own id; a kiln-managed container
# without this label was made by a kiln from before it existed (``Instance.legacy``).
LABEL_INSTALLATION = f"{LABEL_PREFIX}.installation"


class InstanceStatus(StrEnum):
    CREATED = "created"  # the container exists but never ran
    RUNNING = "running"
    EXITED = "exited"  # stopped or crashed; ``exit_code`` says which
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class Instance:
    """One container of one release, as observed through the driver."""

    id: str  # kiln's instance id, e.g. "r3-9f2c1a"; also in the container name
    key: AppKey
    release: int
    container_id: str
    status: InstanceStatus
    address: Address | None = None  # where the router reaches it; None without a port
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    # Made by a kiln from before installation ids (no installation label): it may belong to this
    # installation or to another one on the same engine. Adopt it only when the store knows its
    # app and release; otherwise report it and leave it alone.
    legacy: bool = False

    @property
    def running(self) -> bool:
        return self.status is InstanceStatus.RUNNING


@dataclass(frozen=True)
class SecretRef:
    """A secret an instance gets: which version, and how. Never its value — the planner that
    builds these is pure and sees no plaintext; only the driver gets the value, at start."""

    name: str
    version: int
    as_env: bool = False  # False: the file /run/secrets/NAME


@dataclass(frozen=True)
class VolumeMount:
    """A named volume of the app, mounted at ``path``."""

    name: str
    path: str
    read_only: bool = False


@dataclass(frozen=True, kw_only=True)
class InstanceSpec:
    """Everything the driver needs to start one instance. Built by a pure function from a release."""

    id: str
    key: AppKey
    release: int
    name: str  # unique within the installation; the driver names the container
    # ``kiln-<first 8 of the installation id>-<name>`` so that two installations never clash
    image: str  # digest
    command: tuple[str, ...] | None
    env: dict[str, str]
    port: int | None
    labels: dict[str, str]
    cpus: float | None = None
    memory_bytes: int | None = None
    pids_limit: int | None = None  # processes and threads; None: the engine's default (unlimited)
    user: str | None = None  # "uid[:gid]" or a name; None: the image's default user
    read_only: bool = True
    tmpfs: tuple[str, ...] = ("/tmp",)
    cap_add: tuple[str, ...] = ()
    stop_grace: float = 10.0
    host_network: bool = False  # share the host's network: the app listens on 127.0.0.1:$PORT
    extra: dict[str, str] = field(default_factory=dict)
    secrets: tuple[SecretRef, ...] = ()
    volumes: tuple[VolumeMount, ...] = ()
