"""Docker Compose files → kiln specs, one ``AppSpec`` per service. Pure: no I/O.

    text ──safe_yaml──▶ dict ──interpolate values──▶ sort every key ──typed models──▶ AppSpec each
                                 ${VAR:-x}, $$       mapped │ ignored │ unsupported │ unknown
                                                            ▼         ▼             ▼
                                                          models   warning    problem (with why)

Every problem comes at once with its path (``services.web.ports.1: …``) in one ``SpecInvalid``;
warnings (what kiln leaves out and why) come back with the specs. Environment files are read by
the caller (``read_env_file``), relative paths resolved there.

What maps (see the README's "Docker Compose" section for the whole table):

| Compose | kiln.yaml |
|---|---|
| ``image``; ``build`` (context, dockerfile), tagged as ``image`` when both | ``image``; ``build`` |
| ``volumes`` (named volumes only), top-level ``volumes`` | ``volumes`` (one app each) |
| ``command`` (a string is split like a shell would, no shell runs) | ``command`` |
| ``environment`` (list or mapping), ``env_file`` | ``env`` (``environment`` wins) |
| ``ports`` (one container port; the host port is not published) | ``port`` + default route |
| labels ``kiln.route.host``, ``kiln.route.path`` (comma-separated), ``kiln.port`` | ``routes``, which port |
| label ``kiln.drift`` (a writable root filesystem without it: ``report``) | ``drift`` |
| ``healthcheck`` (test, interval, timeout, retries, start_period) | ``health`` (a command probe) |
| ``deploy.replicas`` / ``scale`` | ``instances`` |
| ``deploy.update_config`` order + parallelism | ``deploy`` strategy, surge, unavailable |
| ``deploy.resources.limits`` (cpus, memory, pids) / ``cpus``, ``mem_limit``, ``pids_limit`` | ``resources`` |
| ``read_only`` (Compose's default: writable), ``cap_add``, ``tmpfs``, ``type: tmpfs`` mounts | ``security`` |
| ``user``, ``stop_grace_period``, ``network_mode: host`` | ``user``, ``stop_grace``, ``network`` |
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from kiln.errors import SpecInvalid
from kiln.spec import grammar
from kiln.spec.envfile import EnvFileError, parse_env_file
from kiln.spec.interpolate import InterpolationError, Interpolator
from kiln.spec.limits import MAX_PROBLEMS
from kiln.spec.model import AppSpec
from kiln.spec.parse import _checked_text, describe_problem
from kiln.spec.problems import shown
from kiln.spec.safe_yaml import YamlRefused, load_yaml

ROUTE_HOST_LABEL = "kiln.route.host"
ROUTE_PATH_LABEL = "kiln.route.path"
PORT_LABEL = "kiln.port"
DRIFT_LABEL = "kiln.drift"
KILN_LABELS = frozenset({ROUTE_HOST_LABEL, ROUTE_PATH_LABEL, PORT_LABEL, DRIFT_LABEL})
"""The labels kiln reads from a Compose service; any other ``kiln.*`` label is a problem."""

ReadEnvFile = Callable[[str], str | None]
"""The text of an ``env_file`` path as written in the Compose file; None when it does not exist."""


@dataclass(frozen=True)
class Build:
    """A service's ``build:``: what ``kiln deploy`` builds (on kiln's engine) before it deploys.

    ``context`` is as written in the Compose file (relative to its folder); ``dockerfile`` is
    inside the context. ``image`` is the Compose ``image:`` given with it: the build is tagged
    with that name, as Compose does; without it kiln names the build after the app.
    """

    context: str
    dockerfile: str = "Dockerfile"
    image: str | None = None

    def as_spec(self) -> str | dict[str, str]:
        """The kiln.yaml ``build:`` value: the path, or context and dockerfile."""
        if self.dockerfile == "Dockerfile":
            return self.context
        return {"context": self.context, "dockerfile": self.dockerfile}


@dataclass(frozen=True)
class Conversion:
    """The specs of a Compose file (in file order) and what kiln left out of them.

    A service with ``build:`` has its entry in ``builds`` (by app name); until it is built its
    spec's ``image`` is the Compose ``image:`` or, without one, the service's name.
    """

    specs: tuple[AppSpec, ...]
    warnings: tuple[str, ...]
    builds: Mapping[str, Build] = field(default_factory=dict)


def is_compose(data: object) -> bool:
    """A Compose file has ``services:`` at the top; a kiln.yaml has ``app:``."""
    return isinstance(data, Mapping) and "services" in data and "app" not in data


def load_document(text: str | bytes, *, source: str) -> Any:
    """The YAML document in ``text`` under the same limits as a kiln.yaml."""
    text = _checked_text(text, source)
    try:
        return load_yaml(text)
    except YamlRefused as exc:
        raise SpecInvalid([str(exc)], source=source) from exc


def convert_compose(
    text: str | bytes,
    *,
    variables: Mapping[str, str],
    read_env_file: ReadEnvFile,
    environment: str = "dev",
    source: str = "compose.yaml",
) -> Conversion:
    """Every service of a Compose file as a validated ``AppSpec``; ``SpecInvalid`` lists every
    problem. ``variables`` interpolate ``${VAR}`` (the shell's environment over ``.env``)."""
    data = load_document(text, source=source)
    converter = _Converter(variables, read_env_file, environment)
    specs = converter.convert(data)
    if converter.problems:
        problems = converter.problems
        if len(problems) > MAX_PROBLEMS:
            more = len(problems) - MAX_PROBLEMS
            problems = [*problems[:MAX_PROBLEMS], f"… and {more} more"]
        raise SpecInvalid(problems, source=source)
    return Conversion(tuple(specs), tuple(converter.warnings), dict(converter.builds))


def render_spec(spec: AppSpec, *, comment: str = "", build: Build | None = None) -> str:
    """The spec as a kiln.yaml document: only what differs from kiln's defaults. With a
    ``build``, ``build:`` comes where ``image:`` was (and ``image:`` stays when the Compose file
    named the image: ``kiln deploy`` then tags the build with it)."""
    data = spec.model_dump(mode="json", exclude_defaults=True)
    if build is not None:
        ordered: dict[str, Any] = {}
        for key, value in data.items():
            if key == "image":
                if build.image:
                    ordered["image"] = build.image
                ordered["build"] = build.as_spec()
            else:
                ordered[key] = value
        data = ordered
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    return (f"# {comment}\n" if comment else "") + body


# --- units ------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_BYTES = re.compile(r"(\d+(?:\.\d+)?)\s*([bkmgt]?)b?", re.IGNORECASE)
_BYTE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def _compose_duration(value: object) -> object:
    """Compose durations: ``1m30s``, ``10s``, ``500ms``, ``1h``, ``100us``; a number is seconds."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration like 10s or 1m30s, got {shown(value)}")
    if not isinstance(value, str):
        return float(value)
    text, total, position = value.strip(), 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not text or position != len(text):
        raise ValueError(f"expected a duration like 10s, 1m30s or 500ms, got {shown(value)}")
    return total


def _compose_bytes(value: object) -> object:
    """Compose byte values: ``512m``, ``1gb``, ``100k`` (binary units, any case) or a number."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a size like 512m or 1g, got {shown(value)}")
    if isinstance(value, int):
        return value
    match = _BYTES.fullmatch(value.strip())
    if not match:
        raise ValueError(f"expected a size like 512m, 1gb or 100k, got {shown(value)}")
    return int(float(match.group(1)) * _BYTE_UNITS[match.group(2).lower()])


Duration = Annotated[float, BeforeValidator(_compose_duration), Field(ge=0)]
ByteSize = Annotated[int, BeforeValidator(_compose_bytes), Field(gt=0)]
Scalar = str | int | float | bool | None


# --- the typed models of what kiln maps --------------------------------------------------------


class _Compose(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Healthcheck(_Compose):
    test: str | list[str] | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    retries: int | None = Field(default=None, ge=1, le=100)
    start_period: Duration | None = None
    disable: bool = False


class UpdateConfig(_Compose):
    parallelism: int | None = Field(default=None, ge=0, le=100)
    order: Literal["start-first", "stop-first"] = "stop-first"  # Compose's default
    failure_action: Literal["rollback", "pause", "continue"] | None = None


class Limits(_Compose):
    cpus: float | None = Field(default=None, gt=0)
    memory: ByteSize | None = None
    pids: int | None = Field(default=None, ge=1)


class ResourcesIn(_Compose):
    limits: Limits | None = None


class DeployIn(_Compose):
    mode: Literal["replicated", "replicated-job", "global", "global-job"] | None = None
    replicas: int | None = Field(default=None, ge=0)
    update_config: UpdateConfig | None = None
    resources: ResourcesIn | None = None


class PortIn(_Compose):
    target: int = Field(ge=1, le=65535)
    published: str | int | None = None
    host_ip: str | None = None
    protocol: str | None = None
    mode: str | None = None
    name: str | None = None
    app_protocol: str | None = None


class EnvFileIn(_Compose):
    path: str
    required: bool = True
    format: Literal["raw"] | None = None


class BuildIn(_Compose):
    context: str = "."
    dockerfile: str | None = None


class VolumeOptionsIn(_Compose):
    nocopy: bool | None = None


class TmpfsOptionsIn(_Compose):
    size: ByteSize | None = None
    mode: int | None = Field(default=None, ge=0, le=0o7777)


class MountIn(_Compose):
    """The long syntax of one service ``volumes:`` entry."""

    type: Literal["volume", "bind", "tmpfs", "npipe", "cluster", "image"]
    source: str | None = None
    target: str
    read_only: bool = False
    volume: VolumeOptionsIn | None = None
    tmpfs: TmpfsOptionsIn | None = None


class Service(_Compose):
    """One Compose service, restricted to the keys kiln maps (the others are sorted out before)."""

    image: str | None = None
    build: str | BuildIn | None = None
    command: str | list[str | int] | None = None
    environment: dict[str, Scalar] | list[str] | None = None
    env_file: str | list[str | EnvFileIn] | None = None
    ports: list[str | int | PortIn] | None = None
    healthcheck: Healthcheck | None = None
    deploy: DeployIn | None = None
    scale: int | None = Field(default=None, ge=0)
    read_only: bool | None = None
    cap_add: list[str] | None = None
    cap_drop: list[str] | None = None
    tmpfs: str | list[str] | None = None
    labels: dict[str, Scalar] | list[str] | None = None
    user: str | int | None = None
    stop_grace_period: Duration | None = None
    network_mode: str | None = None
    cpus: float | None = Field(default=None, gt=0)
    mem_limit: ByteSize | None = None
    pids_limit: int | None = Field(default=None, ge=1)
    init: bool | None = None
    profiles: list[str] | None = None
    volumes: list[str | MountIn | None] | None = None  # None: a bind mount, already refused


# --- what kiln does not map, and why ----------------------------------------------------------

_NO_BINDS = (
    "kiln mounts no host paths: an instance is immutable and may start on another engine; bake"
    " the files into the image (COPY in its Dockerfile), keep data in a named volume"
    " (NAME:/path, declared under the top-level volumes:), or pass a file as a secret"
    " (kiln secret set APP NAME --from-file FILE)"
)
_ERROR, _WARN = "error", "warning"
_Note = tuple[str, str]

_SERVICE_NOTES: dict[str, _Note] = {
    "secrets": (
        _ERROR,
        "kiln keeps secrets itself: store each with `kiln secret set APP NAME --from-file FILE`"
        " and list it under secrets: in the app's kiln.yaml (or pass it in environment)",
    ),
    "configs": (_ERROR, "kiln has no configs: bake the file into the image"),
    "entrypoint": (
        _ERROR,
        "kiln sets only the command (the image's entrypoint stays): build an image with this"
        " entrypoint, or move it into command",
    ),
    "working_dir": (_ERROR, "kiln runs in the image's WORKDIR: set it in the Dockerfile"),
    "privileged": (_ERROR, "kiln never runs privileged instances: name what it needs in cap_add"),
    "devices": (_ERROR, "kiln instances get no host devices"),
    "extends": (_ERROR, "kiln reads one file: inline the extended service"),
    "ipc": (_ERROR, "kiln instances share no IPC namespace"),
    "pid": (_ERROR, "kiln instances share no PID namespace"),
    "userns_mode": (_ERROR, "kiln runs in the engine's user namespace"),
    "sysctls": (_ERROR, "kiln sets no sysctls"),
    "volumes_from": (
        _ERROR,
        "kiln gives each app its own volumes: name the volume in this service's volumes: (the"
        " data is this app's alone; another app reaches it over that app's route)",
    ),
    "depends_on": (
        _WARN,
        "kiln starts each app on its own and in no order: make the service retry until what it"
        " needs answers (its health check keeps it out of the router until then)",
    ),
    "links": (_WARN, "kiln apps reach each other through their routes, not links"),
    "external_links": (_WARN, "kiln apps reach each other through their routes, not links"),
    "networks": (
        _WARN,
        "kiln gives every instance a network of its own; apps reach each other through their"
        " routes",
    ),
    "expose": (_WARN, "only ports: are routed; an exposed port is reachable by nothing"),
    "container_name": (_WARN, "kiln names containers itself (one per instance)"),
    "hostname": (_WARN, "kiln sets each instance's hostname to its instance id"),
    "domainname": (_WARN, "kiln sets each instance's hostname to its instance id"),
    "restart": (
        _WARN,
        "kiln replaces an instance that exits or fails its health check (it never restarts one"
        " in place)",
    ),
    "logging": (_WARN, "kiln keeps logs with json-file, 3 files of 10 MB (`kiln logs APP`)"),
    "stop_signal": (_WARN, "kiln stops with SIGTERM, then SIGKILL after stop_grace_period"),
    "extra_hosts": (_WARN, "kiln adds no host entries"),
    "dns": (_WARN, "instances use the engine's DNS"),
    "dns_search": (_WARN, "instances use the engine's DNS"),
    "dns_opt": (_WARN, "instances use the engine's DNS"),
    "ulimits": (_WARN, "kiln sets pids (deploy.resources.limits.pids), no other ulimits"),
    "security_opt": (_WARN, "kiln always sets no-new-privileges and nothing else"),
    "pull_policy": (_WARN, "kiln never pulls: the image must be on the engine"),
    "platform": (_WARN, "kiln runs the engine's platform"),
    "stdin_open": (_WARN, "kiln instances have no stdin"),
    "tty": (_WARN, "kiln instances have no TTY"),
    "mem_reservation": (_WARN, "kiln sets limits, not reservations"),
    "cpu_shares": (_WARN, "kiln sets cpus (a limit), not shares"),
    "oom_score_adj": (_WARN, "kiln leaves the OOM score to the engine"),
    "shm_size": (_WARN, "kiln keeps the engine's /dev/shm size"),
}

_DEPLOY_NOTES: dict[str, _Note] = {
    "restart_policy": (_WARN, _SERVICE_NOTES["restart"][1]),
    "rollback_config": (_WARN, "kiln rolls back with the same strategy as it rolls out"),
    "placement": (_WARN, "kiln runs every instance on its one engine"),
    "endpoint_mode": (_WARN, "NGINX balances over the instances"),
    "labels": (_WARN, "kiln does not carry labels over"),
}
_UPDATE_NOTES: dict[str, _Note] = {
    "delay": (_WARN, "kiln goes on as soon as the new instances are ready"),
    "monitor": (_WARN, "kiln judges new instances by their health checks (deploy.deadline)"),
    "max_failure_ratio": (_WARN, "kiln rolls back when the new release is not ready in time"),
}
_RESOURCES_NOTES: dict[str, _Note] = {
    "reservations": (_WARN, "kiln sets limits, not reservations"),
}
_LIMITS_NOTES: dict[str, _Note] = {
    "devices": (_ERROR, "kiln instances get no host devices"),
}
_BUILD_NOTES: dict[str, _Note] = {
    "args": (
        _ERROR,
        "kiln's build passes no build arguments: give them as ARG defaults in the Dockerfile, or"
        " build the image yourself and give image:",
    ),
    "target": (
        _ERROR,
        "kiln builds the Dockerfile's last stage: make the stage you want the last one (or a"
        " Dockerfile of its own), or build the image yourself and give image:",
    ),
    "dockerfile_inline": (_ERROR, "kiln builds a Dockerfile file: write it into the context"),
    "additional_contexts": (_ERROR, "kiln uploads one context: put what the build needs in it"),
    "secrets": (_ERROR, "kiln's build takes no secrets: build the image yourself, give image:"),
    "ssh": (_ERROR, "kiln's build forwards no SSH agent: build the image yourself, give image:"),
    "privileged": (_ERROR, "kiln never builds privileged"),
    "entitlements": (_ERROR, "kiln never builds privileged"),
    "tags": (_ERROR, "kiln tags a build once, with image: (a tag means one image forever)"),
    "platforms": (_ERROR, "kiln builds for its engine's platform only"),
    "labels": (
        _WARN,
        "kiln labels each build with its provenance (source commit, dirty or not, build time)",
    ),
    "no_cache": (_WARN, "kiln builds again only when the source changed"),
    "pull": (_WARN, "kiln never pulls: the base image must be on its engine"),
    "cache_from": (_WARN, "kiln builds with its engine's local cache"),
    "cache_to": (_WARN, "kiln builds with its engine's local cache"),
    "network": (_WARN, "kiln builds on its engine's default network"),
    "extra_hosts": (_WARN, "kiln's build adds no host entries"),
    "shm_size": (_WARN, "kiln's build keeps the engine's /dev/shm size"),
    "ulimits": (_WARN, "kiln's build keeps the engine's ulimits"),
    "isolation": (_WARN, "kiln's build uses the engine's default isolation"),
}
_MOUNT_NOTES: dict[str, _Note] = {
    "bind": (_ERROR, _NO_BINDS),
    "consistency": (_WARN, "only for Docker Desktop's file sharing"),
}
_VOLUME_OPTION_NOTES: dict[str, _Note] = {
    "subpath": (_ERROR, "kiln mounts a whole volume: mount it, and let the app use the subpath"),
}
_NO_EXTERNAL = (
    "kiln touches only volumes it created (two kilns never share one): let kiln create it, and"
    " copy the data in with `kiln volume restore`"
)
_TOP_VOLUME_NOTES: dict[str, _Note] = {
    "driver_opts": (_ERROR, "kiln creates plain local volumes, without driver options"),
    "name": (_WARN, "kiln names the volume kiln-<installation>-<env>-<app>-<volume>"),
    "labels": (_WARN, "kiln labels its volumes as its own"),
}
_HEALTH_NOTES: dict[str, _Note] = {
    "start_interval": (_WARN, "kiln checks at interval from the start"),
}
_TOP_NOTES: dict[str, _Note] = {
    "version": (_WARN, "obsolete in Compose, ignored"),
    "name": (_WARN, "kiln names apps after their services; the project name is not used"),
    "networks": (_WARN, _SERVICE_NOTES["networks"][1]),
    "secrets": (_WARN, "not used: kiln keeps secrets itself (kiln secret set)"),
    "configs": (_WARN, "not used: kiln has no configs"),
    "include": (_ERROR, "kiln reads one file: put the included services in it"),
}


class _Converter:
    def __init__(
        self, variables: Mapping[str, str], read_env_file: ReadEnvFile, environment: str
    ) -> None:
        self.variables = variables
        self.read_env_file = read_env_file
        self.environment = environment
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.builds: dict[str, Build] = {}
        self.declared_volumes: set[str] = set()
        self.volume_users: dict[str, list[str]] = {}
        self.interpolate = Interpolator(variables)

    # -- the whole file ----------------------------------------------------------------------

    def convert(self, data: object) -> list[AppSpec]:
        if data is None:
            self.problems.append("the file is empty: give services")
            return []
        if not isinstance(data, Mapping):
            self.problems.append(
                f"the top level must be a mapping with services:, got {type(data).__name__}"
            )
            return []
        data = dict(self._interpolated(data, ()))
        for name in self.interpolate.unset:
            self.warnings.append(f"variable {name} is not set: an empty string is used")
        top = self._sorted(data, (), {"services", "volumes"}, _TOP_NOTES)
        self._declare_volumes(top.get("volumes"))
        services = top.get("services")
        if not isinstance(services, Mapping) or not services:
            self.problems.append("services: give at least one service (a mapping of name: {…})")
            return []
        specs = []
        for name, raw in services.items():
            spec = self._service(str(name), raw)
            if spec is not None:
                specs.append(spec)
        for volume, users in self.volume_users.items():
            if len(users) > 1:
                self.problems.append(
                    f"volumes.{volume}: used by {' and '.join(users)}, but a kiln volume belongs"
                    " to one app (each would get its own, empty one): let one service own the"
                    " data and serve it to the others over its route"
                )
        return specs

    def _declare_volumes(self, declared: object) -> None:
        if declared is None:
            return
        if not isinstance(declared, Mapping):
            self.problems.append(
                f"volumes: must be a mapping of name: {{…}}, got {shown(declared)}"
            )
            return
        for name, options in declared.items():
            where = ("volumes", str(name))
            self.declared_volumes.add(str(name))
            if options is None:
                continue
            if not isinstance(options, Mapping):
                self.problems.append(f"{_path(where)}: must be a mapping, got {shown(options)}")
                continue
            kept = self._sorted(options, where, {"driver", "external"}, _TOP_VOLUME_NOTES)
            if kept.get("external") not in (None, False):
                self.problems.append(
                    f"{_path((*where, 'external'))}: not supported: {_NO_EXTERNAL}"
                )
            driver = kept.get("driver")
            if driver not in (None, "local"):
                self.problems.append(
                    f"{_path((*where, 'driver'))}: {shown(driver)} is not supported: kiln creates"
                    " local volumes on its engine (driver: local)"
                )

    def _interpolated(self, value: Any, path: tuple[str | int, ...]) -> Any:
        # Values only, never keys (the Compose specification's rule).
        if isinstance(value, str):
            try:
                return self.interpolate(value)
            except InterpolationError as exc:
                self.problems.append(f"{_path(path)}: {exc}")
                return value
        if isinstance(value, Mapping):
            return {k: self._interpolated(v, (*path, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [self._interpolated(v, (*path, i)) for i, v in enumerate(value)]
        return value

    def _sorted(
        self,
        data: Mapping[str, Any],
        path: tuple[str | int, ...],
        mapped: set[str] | frozenset[str],
        notes: Mapping[str, _Note],
    ) -> dict[str, Any]:
        """Keys kiln maps; a warning or a problem for each key it does not, with why."""
        kept: dict[str, Any] = {}
        for key, value in data.items():
            key = str(key)
            where = _path((*path, key))
            if key.startswith("x-"):
                continue  # extension fields: Compose ignores them, so does kiln
            if key in mapped:
                kept[key] = value
            elif key in notes:
                severity, why = notes[key]
                if severity == _ERROR:
                    self.problems.append(f"{where}: not supported: {why}")
                else:
                    self.warnings.append(f"{where}: ignored: {why}")
            else:
                self.problems.append(
                    f"{where}: is not a Compose key kiln knows (check its spelling against the"
                    " Compose specification)"
                )
        return kept

    # -- one service --------------------------------------------------------------------------

    def _service(self, name: str, raw: object) -> AppSpec | None:
        base = ("services", name)
        if not isinstance(raw, Mapping):
            self.problems.append(f"{_path(base)}: must be a mapping of keys, got {shown(raw)}")
            return None
        count = len(self.problems)
        if problem := grammar.name_problem(name):
            self.problems.append(
                f"{_path(base)}: the service's name becomes the app's name, which {problem};"
                " rename the service"
            )
        depends = raw.get("depends_on")
        if isinstance(depends, Mapping):
            for other, how in depends.items():
                condition = how.get("condition") if isinstance(how, Mapping) else None
                if condition not in (None, "service_started"):
                    self.warnings.append(
                        f"{_path((*base, 'depends_on', str(other), 'condition'))}: {condition} is"
                        " not supported: kiln starts every app at once and keeps an instance out"
                        " of the router until its own health check passes; make this service"
                        f" retry until {other} answers"
                    )
        data = self._sorted(raw, base, set(Service.model_fields), _SERVICE_NOTES)
        self._sort_nested(data, base)
        try:
            service = Service.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors():
                error["loc"] = (*base, *error["loc"])
                self.problems.append(describe_problem(error))
            # Go on without the keys in error, so the problems of the others are found too.
            for error in exc.errors():
                _drop(data, error["loc"])
            try:
                service = Service.model_validate(data)
            except ValidationError:
                return None
        spec_data = self._spec_data(name, service, base)
        if len(self.problems) > count:
            return None
        try:
            return AppSpec.model_validate(spec_data)
        except ValidationError as exc:
            for error in exc.errors():
                self.problems.append(f"{_path(base)}: as kiln.yaml, {describe_problem(error)}")
            return None

    def _sort_nested(self, data: dict[str, Any], base: tuple[str | int, ...]) -> None:
        deploy = data.get("deploy")
        if isinstance(deploy, Mapping):
            where = (*base, "deploy")
            deploy = self._sorted(deploy, where, set(DeployIn.model_fields), _DEPLOY_NOTES)
            update = deploy.get("update_config")
            if isinstance(update, Mapping):
                deploy["update_config"] = self._sorted(
                    update, (*where, "update_config"), set(UpdateConfig.model_fields), _UPDATE_NOTES
                )
            resources = deploy.get("resources")
            if isinstance(resources, Mapping):
                resources = self._sorted(
                    resources, (*where, "resources"), {"limits"}, _RESOURCES_NOTES
                )
                limits = resources.get("limits")
                if isinstance(limits, Mapping):
                    resources["limits"] = self._sorted(
                        limits,
                        (*where, "resources", "limits"),
                        set(Limits.model_fields),
                        _LIMITS_NOTES,
                    )
                deploy["resources"] = resources
            data["deploy"] = deploy
        build = data.get("build")
        if isinstance(build, Mapping):
            data["build"] = self._sorted(
                build, (*base, "build"), set(BuildIn.model_fields), _BUILD_NOTES
            )
        volumes = data.get("volumes")
        if isinstance(volumes, list):
            mounts = [
                self._sorted_mount(entry, (*base, "volumes", i))
                if isinstance(entry, Mapping)
                else entry
                for i, entry in enumerate(volumes)
            ]
            data["volumes"] = mounts  # a bind mount stays as None: the indexes are the paths
        health = data.get("healthcheck")
        if isinstance(health, Mapping):
            data["healthcheck"] = self._sorted(
                health, (*base, "healthcheck"), set(Healthcheck.model_fields), _HEALTH_NOTES
            )

    def _sorted_mount(
        self, entry: Mapping[str, Any], where: tuple[str | int, ...]
    ) -> dict[str, Any] | None:
        """A long-syntax mount with its keys sorted; None (and a problem) for a bind mount."""
        if entry.get("type") == "bind":
            self.problems.append(f"{_path(where)}: a bind mount is not supported: {_NO_BINDS}")
            return None
        mount = self._sorted(entry, where, set(MountIn.model_fields), _MOUNT_NOTES)
        options = mount.get("volume")
        if isinstance(options, Mapping):
            mount["volume"] = self._sorted(
                options, (*where, "volume"), set(VolumeOptionsIn.model_fields), _VOLUME_OPTION_NOTES
            )
        return mount

    def _spec_data(self, name: str, s: Service, base: tuple[str | int, ...]) -> dict[str, Any]:
        spec: dict[str, Any] = {"app": name, "environment": self.environment}
        spec["image"] = self._image(name, s, base)
        if s.command is not None:
            spec["command"] = self._command(s.command, (*base, "command"))
        env = self._env(s, base)
        labels = self._labels(s.labels, (*base, "labels"))
        port = self._port(s.ports, labels.get(PORT_LABEL), base)
        if port is not None:
            spec["port"] = port
            if env.get("PORT") == str(port):
                del env["PORT"]  # kiln sets PORT from port itself
            elif "PORT" in env:
                self.problems.append(
                    f"{_path((*base, 'environment'))}: PORT is {shown(env['PORT'])}, but kiln sets"
                    f" PORT to the container port ({port}): drop it or make them agree"
                )
        if env:
            spec["env"] = env
        routes = self._routes(labels, port, (*base, "labels"))
        if routes is not None:
            spec["routes"] = routes
        instances = self._instances(s, base)
        if instances is not None:
            spec["instances"] = instances
        if s.user is not None:
            spec["user"] = str(s.user)
        if (resources := self._resources(s, base)) is not None:
            spec["resources"] = resources
        if (health := self._health(s.healthcheck, port, (*base, "healthcheck"))) is not None:
            spec["health"] = health
        if (deploy := self._deploy(s, instances, base)) is not None:
            spec["deploy"] = deploy
        if s.stop_grace_period is not None:
            spec["stop_grace"] = s.stop_grace_period
        volumes, tmpfs_mounts = self._volumes(name, s, instances, base)
        if volumes:
            spec["volumes"] = volumes
        spec["security"] = self._security(s, base)
        if tmpfs_mounts:
            given = spec["security"].get("tmpfs", ["/tmp"])
            paths = {entry.partition(":")[0] for entry in given}
            spec["security"]["tmpfs"] = given + [
                t for t in tmpfs_mounts if t.partition(":")[0] not in paths
            ]
        if (drift := self._drift(labels, s, base)) is not None:
            spec["drift"] = drift
        if (network := self._network(s.network_mode, (*base, "network_mode"))) is not None:
            spec["network"] = network
        if s.init is False:
            self.warnings.append(
                f"{_path((*base, 'init'))}: ignored: kiln always runs an init, so signals reach"
                " the app and zombies are reaped"
            )
        if s.profiles:
            self.warnings.append(
                f"{_path((*base, 'profiles'))}: ignored: kiln converts every service, also those"
                " Compose starts only with --profile"
            )
        return spec

    def _image(self, name: str, s: Service, base: tuple[str | int, ...]) -> str:
        if s.build is None:
            if not s.image:
                self.problems.append(
                    f"{_path(base)}: give image: (the image the service runs) or build:"
                )
            return s.image or ""
        where = (*base, "build")
        given = BuildIn(context=s.build) if isinstance(s.build, str) else s.build
        context, dockerfile = given.context, given.dockerfile or "Dockerfile"
        if "://" in context or context.startswith("git@") or context.endswith(".git"):
            self.problems.append(
                f"{_path(where)}: {shown(context)} is not supported: kiln builds a directory next"
                " to the Compose file; clone the repository and give its path"
            )
        elif not context:
            self.problems.append(f"{_path(where)}: give the build context (a directory)")
        parts = dockerfile.replace("\\", "/").split("/")
        if dockerfile.startswith("/") or ".." in parts:
            self.problems.append(
                f"{_path((*where, 'dockerfile'))}: {shown(dockerfile)} is outside the context:"
                " kiln uploads only the context, so the Dockerfile must be inside it"
            )
        image = s.image
        if image:
            image = self._build_tag(image, (*base, "image"))
        self.builds[name] = Build(context=context, dockerfile=dockerfile, image=image or None)
        # The spec needs an image to validate; kiln deploy puts the built digest in its place.
        return image or name

    def _build_tag(self, image: str, where: tuple[str | int, ...]) -> str:
        """Compose tags a build with ``image:``; kiln tags it in its own registry."""
        if "@" in image:
            self.problems.append(
                f"{_path(where)}: {shown(image)} is a digest, which names an image already built:"
                " give a name (and tag) for the build, or drop build:"
            )
            return image
        first, slash, rest = image.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            self.warnings.append(
                f"{_path(where)}: the build goes to kiln's registry as {rest}, not to {first}"
                " (kiln deploys from its own registry)"
            )
            return rest
        return image

    def _command(self, command: str | list[str | int], where: tuple[str | int, ...]) -> list[str]:
        if isinstance(command, list):
            return [str(word) for word in command]
        try:
            return shlex.split(command)
        except ValueError as exc:
            self.problems.append(f"{_path(where)}: cannot split it into words: {exc}")
            return []

    def _env(self, s: Service, base: tuple[str | int, ...]) -> dict[str, str]:
        env: dict[str, str] = {}
        files: list[str | EnvFileIn] = (
            [s.env_file] if isinstance(s.env_file, str) else list(s.env_file or [])
        )
        for i, entry in enumerate(files):
            where = _path(
                (*base, "env_file", i) if not isinstance(s.env_file, str) else (*base, "env_file")
            )
            item = EnvFileIn(path=entry) if isinstance(entry, str) else entry
            text = self.read_env_file(item.path)
            if text is None:
                if item.required:
                    self.problems.append(
                        f"{where}: {item.path} does not exist (next to the Compose file); create"
                        " it or set required: false"
                    )
                continue
            if item.format == "raw":
                for line in text.splitlines():
                    if line.strip() and not line.lstrip().startswith("#"):
                        key, _, value = line.partition("=")
                        env[key.strip()] = value
                continue
            try:
                env.update(parse_env_file(text, self.variables))
            except EnvFileError as exc:
                self.problems.append(f"{where}: {item.path}, {exc}")
        given = s.environment
        if isinstance(given, list):
            for i, pair in enumerate(given):
                key, equals, value = pair.partition("=")
                if equals:
                    env[key] = value
                elif key in self.variables:  # NAME alone: from the shell, left out if unset
                    env[key] = self.variables[key]
                elif not key:
                    self.problems.append(f"{_path((*base, 'environment', i))}: give NAME=value")
        elif given:
            for key, scalar in given.items():
                if scalar is None:
                    if key in self.variables:
                        env[key] = self.variables[key]
                else:
                    env[key] = _text(scalar)
        return env

    def _labels(self, labels: object, where: tuple[str | int, ...]) -> dict[str, str]:
        pairs: dict[str, str] = {}
        if isinstance(labels, list):
            for item in labels:
                key, _, value = str(item).partition("=")
                pairs[key] = value
        elif isinstance(labels, Mapping):
            pairs = {str(k): "" if v is None else _text(v) for k, v in labels.items()}
        ours = {k: v for k, v in pairs.items() if k.startswith("kiln.")}
        for key in ours:
            if key not in KILN_LABELS:
                self.problems.append(
                    f"{_path((*where, key))}: not a label kiln knows; kiln reads "
                    + ", ".join(sorted(KILN_LABELS))
                )
        others = [k for k in pairs if k not in ours]
        if others:
            self.warnings.append(
                f"{_path(where)}: {', '.join(others)} ignored: kiln does not carry labels over to"
                f" its instances (it reads {', '.join(sorted(KILN_LABELS))})"
            )
        return ours

    def _port(
        self,
        ports: list[str | int | PortIn] | None,
        chosen: str | None,
        base: tuple[str | int, ...],
    ) -> int | None:
        targets: list[int] = []
        for i, entry in enumerate(ports or []):
            where = _path((*base, "ports", i))
            target = self._container_port(entry, where)
            if target is not None and target not in targets:
                targets.append(target)
        if chosen is not None:
            where = _path((*base, "labels", PORT_LABEL))
            if not chosen.isdigit() or int(chosen) not in targets:
                self.problems.append(
                    f"{where}: must be one of the container ports in ports: "
                    f"{', '.join(map(str, targets)) or 'none'}, got {shown(chosen)}"
                )
                return None
            return int(chosen)
        if len(targets) > 1:
            self.problems.append(
                f"{_path((*base, 'ports'))}: kiln routes one container port per app, this service"
                f" has {len(targets)} ({', '.join(map(str, targets))}): pick one with the label"
                f" {PORT_LABEL}, or split the service"
            )
            return None
        return targets[0] if targets else None

    def _container_port(self, entry: str | int | PortIn, where: str) -> int | None:
        if isinstance(entry, PortIn):
            protocol, target, published = entry.protocol or "tcp", entry.target, entry.published
        else:
            text = str(entry)
            spec, _, protocol = text.partition("/")
            protocol = protocol or "tcp"
            host, colon, container = spec.rpartition(":")
            published = host.rpartition(":")[2] if colon else None
            if not container.isdigit() or not 1 <= int(container) <= 65535:
                self.problems.append(
                    f"{where}: expected [HOST:]CONTAINER[/tcp] with one container port, got"
                    f" {shown(text)} (kiln routes one port; ranges are not supported)"
                )
                return None
            target = int(container)
        if protocol != "tcp":
            self.problems.append(
                f"{where}: {protocol} is not supported: kiln routes HTTP through NGINX (tcp only)"
            )
            return None
        if published not in (None, ""):
            self.warnings.append(
                f"{where}: host port {published} is not published: kiln routes requests to"
                f" container port {target} through NGINX (see the app's routes; label"
                f" {ROUTE_HOST_LABEL} picks the host)"
            )
        return target

    def _routes(
        self, labels: Mapping[str, str], port: int | None, where: tuple[str | int, ...]
    ) -> list[dict[str, str]] | None:
        hosts = _split(labels.get(ROUTE_HOST_LABEL))
        paths = _split(labels.get(ROUTE_PATH_LABEL))
        if not hosts and not paths:
            return None
        if port is None:
            self.problems.append(
                f"{_path(where)}: {ROUTE_HOST_LABEL} and {ROUTE_PATH_LABEL} need a port: add"
                " ports: with the container port the app listens on"
            )
            return None
        return [
            {"path": path, **({"host": host} if host else {})}
            for host in (hosts or [""])
            for path in (paths or ["/"])
        ]

    def _instances(self, s: Service, base: tuple[str | int, ...]) -> int | None:
        replicas = s.deploy.replicas if s.deploy else None
        if replicas is not None and s.scale is not None and replicas != s.scale:
            self.problems.append(
                f"{_path((*base, 'scale'))}: says {s.scale} but deploy.replicas says {replicas}:"
                " give one"
            )
        if s.deploy and s.deploy.mode not in (None, "replicated"):
            self.problems.append(
                f"{_path((*base, 'deploy', 'mode'))}: {s.deploy.mode} is not supported: kiln runs"
                " a number of replicas of each app (deploy.replicas)"
            )
        return replicas if replicas is not None else s.scale

    def _resources(self, s: Service, base: tuple[str | int, ...]) -> dict[str, Any] | None:
        limits = s.deploy.resources.limits if s.deploy and s.deploy.resources else None
        given = {
            "cpus": (limits.cpus if limits else None, s.cpus, "cpus"),
            "memory": (limits.memory if limits else None, s.mem_limit, "mem_limit"),
            "pids": (limits.pids if limits else None, s.pids_limit, "pids_limit"),
        }
        resources: dict[str, Any] = {}
        for limit, (in_deploy, legacy, legacy_key) in given.items():
            if in_deploy is not None and legacy is not None and in_deploy != legacy:
                self.problems.append(
                    f"{_path((*base, legacy_key))}: differs from deploy.resources.limits."
                    f"{limit}: give one"
                )
            value = in_deploy if in_deploy is not None else legacy
            if value is not None:
                resources[limit] = value
        return resources or None

    def _health(
        self, check: Healthcheck | None, port: int | None, where: tuple[str | int, ...]
    ) -> dict[str, Any] | None:
        if check is None:
            return None
        test = check.test
        if check.disable or test == ["NONE"]:
            self.warnings.append(
                f"{_path(where)}: ignored: kiln always checks health (tcp on the port; a worker"
                " without one is checked by running)"
            )
            return None
        health: dict[str, Any] = {}
        if isinstance(test, str):
            health["command"] = ["/bin/sh", "-c", test]
        elif isinstance(test, list) and test and test[0] == "CMD" and len(test) > 1:
            health["command"] = test[1:]
        elif isinstance(test, list) and len(test) == 2 and test[0] == "CMD-SHELL":
            health["command"] = ["/bin/sh", "-c", test[1]]
        elif test is not None:
            self.problems.append(
                f"{_path((*where, 'test'))}: expected [CMD, program, args…], [CMD-SHELL,"
                f" 'command'] or a string, got {shown(test)}"
            )
            return None
        elif port is not None:
            health["tcp"] = True
        else:
            return None
        if check.interval is not None:
            health["interval"] = check.interval
        if check.timeout is not None:
            health["timeout"] = check.timeout
        elif check.interval is not None and check.interval < 1.0:
            health["timeout"] = check.interval
        if check.retries is not None:
            health["unhealthy_threshold"] = check.retries
        if check.start_period is not None:
            health["grace"] = check.start_period
        return health

    def _deploy(
        self, s: Service, instances: int | None, base: tuple[str | int, ...]
    ) -> dict[str, Any] | None:
        update = s.deploy.update_config if s.deploy else None
        if update is None:
            return None  # kiln's default: rolling, one extra instance at a time, none missing
        where = (*base, "deploy", "update_config")
        if update.failure_action in ("pause", "continue"):
            self.warnings.append(
                f"{_path((*where, 'failure_action'))}: ignored: kiln rolls back a release that"
                " does not become ready by deploy.deadline"
            )
        size = instances if instances is not None else 1
        parallelism = update.parallelism if update.parallelism is not None else 1
        if update.order == "start-first":
            surge = parallelism if parallelism > 0 else max(size, 1)
            return {"strategy": "rolling", "max_surge": surge, "max_unavailable": 0}
        if parallelism == 0 or parallelism >= size:
            return {"strategy": "recreate"}
        return {"strategy": "rolling", "max_surge": 0, "max_unavailable": parallelism}

    def _volumes(
        self, name: str, s: Service, instances: int | None, base: tuple[str | int, ...]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Named volumes as kiln volumes, ``type: tmpfs`` mounts as tmpfs entries."""
        volumes: list[dict[str, Any]] = []
        tmpfs: list[str] = []
        update = s.deploy.update_config if s.deploy else None
        # Every replica of a Compose service mounts the same volume, and start-first runs the
        # old and the new container at once: that is kiln's shared volume. One replica that
        # stops before its successor starts is a single writer, which kiln can promise.
        replicas = instances if instances is not None else 1
        shared = replicas > 1 or (update is not None and update.order == "start-first")
        for i, entry in enumerate(s.volumes or []):
            where = (*base, "volumes", i)
            mount = self._mount(entry, where) if entry is not None else None
            if mount is None:
                continue
            kind, source, target, read_only = mount
            if kind == "tmpfs":
                tmpfs.append(target)
                continue
            if source not in self.declared_volumes:
                self.problems.append(
                    f"{_path(where)}: volume {source} is not declared: add it under the top-level"
                    f" volumes: ({source}: {{}})"
                )
                continue
            users = self.volume_users.setdefault(source, [])
            if name not in users:
                users.append(name)
            kiln_name = source.lower().replace("_", "-").replace(".", "-")
            if kiln_name != source:
                self.warnings.append(
                    f"{_path(where)}: volume {source} is named {kiln_name} in kiln (a volume name"
                    " is a lowercase DNS label)"
                )
            volume: dict[str, Any] = {"name": kiln_name, "path": target}
            if read_only:
                # No writer: replicas and start-first may mount it together without shared.
                volume["read_only"] = True
            elif shared:
                volume["shared"] = True
                self.warnings.append(
                    f"{_path(where)}: {kiln_name} is shared: true, because"
                    + (
                        f" {replicas} replicas"
                        if replicas > 1
                        else " update_config order start-first runs two releases"
                    )
                    + " write it at once, as under Compose; the app must allow that"
                )
            volumes.append(volume)
        return volumes, tmpfs

    def _mount(
        self, entry: str | MountIn, where: tuple[str | int, ...]
    ) -> tuple[str, str, str, bool] | None:
        """(kind, source, target, read-only) of one mount; None after a problem or a warning
        says why."""
        if isinstance(entry, str):
            parts = entry.split(":")
            if len(parts) == 1:
                self.problems.append(
                    f"{_path(where)}: {shown(entry)} is an anonymous volume: kiln keeps only named"
                    " volumes; name it (NAME:/path) and declare it under the top-level volumes:"
                )
                return None
            if len(parts) > 3:
                self.problems.append(
                    f"{_path(where)}: expected NAME:/PATH[:ro], got {shown(entry)}"
                )
                return None
            source, target, mode = parts[0], parts[1], parts[2] if len(parts) == 3 else ""
            if source.startswith((".", "/", "~")) or "/" in source or "\\" in source:
                self.problems.append(
                    f"{_path(where)}: {shown(source)} is a host path, and a bind mount is not"
                    f" supported: {_NO_BINDS}"
                )
                return None
            options = [o for o in mode.split(",") if o]
            unknown = [o for o in options if o not in ("ro", "rw", "z", "Z", "nocopy")]
            if unknown:
                self.problems.append(
                    f"{_path(where)}: {', '.join(unknown)} is not a mode kiln knows (ro or rw)"
                )
                return None
            if "ro" in options and "rw" in options:
                self.problems.append(f"{_path(where)}: ro or rw, not both, got {shown(entry)}")
                return None
            return "volume", source, target, "ro" in options
        if entry.type == "tmpfs":
            options = []
            if entry.tmpfs is not None and entry.tmpfs.size is not None:
                options.append(f"size={entry.tmpfs.size}")
            if entry.tmpfs is not None and entry.tmpfs.mode is not None:
                options.append(f"mode={entry.tmpfs.mode:o}")
            return "tmpfs", "", entry.target + (":" + ",".join(options) if options else ""), False
        if entry.type != "volume":
            self.problems.append(
                f"{_path((*where, 'type'))}: {entry.type} is not supported: kiln mounts named"
                " volumes (type: volume) and tmpfs"
            )
            return None
        if not entry.source:
            self.problems.append(
                f"{_path(where)}: an anonymous volume: kiln keeps only named volumes; give it a"
                " source and declare it under the top-level volumes:"
            )
            return None
        if entry.volume is not None and entry.volume.nocopy:
            self.warnings.append(
                f"{_path((*where, 'volume', 'nocopy'))}: ignored: the engine copies the image's"
                " files at the path into a new, empty volume"
            )
        return "volume", entry.source, entry.target, entry.read_only

    def _security(self, s: Service, base: tuple[str | int, ...]) -> dict[str, Any]:
        # Compose runs a writable root filesystem unless read_only: true; so does the spec, or
        # an app that writes its files would fail under kiln.
        security: dict[str, Any] = {"read_only": bool(s.read_only)}
        if s.cap_add:
            security["cap_add"] = s.cap_add
        if s.cap_drop and [c.upper() for c in s.cap_drop] != ["ALL"]:
            self.warnings.append(
                f"{_path((*base, 'cap_drop'))}: ignored: kiln drops every capability but those"
                " in cap_add"
            )
        if s.tmpfs is not None:
            security["tmpfs"] = [s.tmpfs] if isinstance(s.tmpfs, str) else s.tmpfs
        return security

    def _drift(
        self, labels: Mapping[str, str], s: Service, base: tuple[str | int, ...]
    ) -> str | None:
        given = labels.get(DRIFT_LABEL)
        if given is not None:
            if given not in ("replace", "report"):
                self.problems.append(
                    f"{_path((*base, 'labels', DRIFT_LABEL))}: replace or report, got {shown(given)}"
                )
            return given
        if s.read_only:
            return None
        # An app that writes to its root filesystem would be replaced at every drift check.
        self.warnings.append(
            f"{_path(base)}: its root filesystem is writable (no read_only: true), so kiln only"
            f" reports files it changes (drift: report); set read_only: true with tmpfs: for the"
            f" paths it writes, or label {DRIFT_LABEL}: replace, to have changed instances"
            " replaced"
        )
        return "report"

    def _network(self, mode: str | None, where: tuple[str | int, ...]) -> str | None:
        if mode is None or mode in ("bridge", "default"):
            return None
        if mode == "host":
            return "host"
        if mode.startswith(("service:", "container:")):
            why = (
                f"{shown(mode)} is not supported: kiln never joins one app's network namespace to"
                " another's (instances come and go); reach the other app through its route"
            )
        else:
            why = f"{shown(mode)} is not supported: kiln runs bridge (the default) or host"
        self.problems.append(f"{_path(where)}: {why}")
        return None


def _drop(data: dict[str, Any], loc: tuple[str | int, ...]) -> None:
    """Remove the deepest mapping key on ``loc`` (a field in error) from nested dicts."""
    node: Any = data
    for i, part in enumerate(loc):
        if not isinstance(node, dict) or part not in node:
            return
        child = node[part]
        if i == len(loc) - 1 or not isinstance(child, dict) or loc[i + 1] not in child:
            del node[part]
            return
        node = child


def _path(parts: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def _text(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]
