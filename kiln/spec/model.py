"""The validated shape of ``kiln.yaml``.

Every model is frozen and forbids unknown fields, so a typo (``imagee:``) is a problem with its
field path instead of a silently ignored line. Defaults are chosen so that a four-line spec
(``app``, ``image``, ``port``, ``instances``) deploys a health-checked, routed, rolling app. A
spec that validates can run: what an engine, NGINX or a probe would only refuse later (a
relative tmpfs path, a NUL in a variable, a route NGINX cannot parse) is refused here, when the
release is created. Checks that depend on the host are in ``runnable``.

Stored releases are validated by this model again when they are read, so a field added later
must have a default, and a default must never make an old release's spec invalid.
"""

from __future__ import annotations

import itertools
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from kiln.spec import grammar
from kiln.spec.grammar import NAME_PATTERN
from kiln.spec.limits import (
    MAX_CAPABILITIES,
    MAX_COMMAND_ARGS,
    MAX_COMMAND_BYTES,
    MAX_ENV_BYTES,
    MAX_ENV_NAME_BYTES,
    MAX_ENV_VALUE_BYTES,
    MAX_IMAGE_LENGTH,
    MAX_INSTANCES,
    MAX_ROUTES,
    MAX_TMPFS,
)
from kiln.spec.problems import Loc, raise_problems, shown
from kiln.spec.units import DURATION_PATTERN, MAX_INT64, SIZE_PATTERN, parse_duration, parse_size

__all__ = ["NAME_PATTERN"]  # re-exported: the API and the CLI check names with it

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TMPFS_PATH = re.compile(r"/[^\s\x00:,]*")
_TMPFS_OPTIONS = re.compile(r"[A-Za-z0-9_=.,+-]*")

# The JSON Schema must accept what the validator accepts ("2s" as well as 2), or editors
# would flag valid specs.
Seconds = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(ge=0),
    PlainSerializer(lambda v: v, return_type=float),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ]
        }
    ),
]
"""A duration; accepts ``2s``, ``500ms``, ``1m30s`` or a number of seconds."""

Bytes = Annotated[
    int,
    BeforeValidator(parse_size),
    Field(gt=0, le=MAX_INT64),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_INT64},
                {"type": "string", "pattern": SIZE_PATTERN},
            ]
        }
    ),
]
"""A size; accepts ``128Mi``, ``512M``, ``1Gi`` or a number of bytes (at most 2^63 - 1)."""


def _not_a_bool(value: object) -> object:
    # pydantic's lax mode reads True as 1: `instances: yes` in YAML would silently mean one.
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {str(value).lower()}")
    return value


def _number_not_a_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


Count = Annotated[int, BeforeValidator(_not_a_bool)]
"""A whole number (instances, ports, thresholds); a boolean is a problem, not 0 or 1."""

# The bounds come before the validator so pydantic writes them into the JSON Schema as
# minimum/maximum (after it, inside ``| None``, they would leak out as "ge"/"le").
Port = Annotated[int, Field(ge=1, le=65535), BeforeValidator(_not_a_bool)]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(f"contains a NUL character, which no program can be given: {shown(value)}")
    return value


def _words_are_strings(value: object) -> object:
    # `command: [sleep, 3600]` — YAML reads the 3600 as a number; an argument is a string.
    if isinstance(value, list):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


def _runnable_command(value: list[str]) -> list[str]:
    if not value or not value[0]:
        raise ValueError(
            f"must name a program to run, got {shown(value) if value else 'an empty list'}"
        )
    if len(value) > MAX_COMMAND_ARGS:
        raise ValueError(
            f"at most {MAX_COMMAND_ARGS} words (program and arguments), got {len(value)}"
        )
    size = sum(len(v.encode()) for v in value)
    if size > MAX_COMMAND_BYTES:
        raise ValueError(f"at most {MAX_COMMAND_BYTES // 1024} KiB in all, got {size} bytes")
    return value


Command = Annotated[
    list[Annotated[str, AfterValidator(_no_nul)]],
    BeforeValidator(_words_are_strings),
    AfterValidator(_runnable_command),
]
"""A program and its arguments, exec-style (no shell)."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Network(StrEnum):
    BRIDGE = "bridge"
    HOST = "host"


class Strategy(StrEnum):
    ROLLING = "rolling"
    BLUE_GREEN = "blue-green"
    CANARY = "canary"
    RECREATE = "recreate"


class Probe(_Strict):
    """One health check. Exactly one of ``http``, ``tcp``, ``command``; none means tcp on ``port``."""

    http: str | None = Field(
        default=None,
        description="HTTP path (and query) in visible ASCII; healthy on a 2xx or 3xx answer",
        json_schema_extra={"pattern": grammar.PROBE_PATH_PATTERN},
    )
    tcp: bool = Field(default=False, description="healthy when the port accepts a connection")
    command: Command | None = Field(
        default=None, description="run inside the instance; healthy on exit code 0"
    )
    interval: Seconds = Field(default=2.0, description="time between checks once running")
    timeout: Seconds = Field(default=1.0, description="a check slower than this fails")
    grace: Seconds = Field(
        default=30.0,
        description="time a new instance has to pass its first check before failures count",
    )
    healthy_threshold: Count = Field(
        default=1, ge=1, le=100, description="passes in a row to be healthy"
    )
    unhealthy_threshold: Count = Field(
        default=3, ge=1, le=100, description="failures in a row to be unhealthy"
    )

    @field_validator("http")
    @classmethod
    def _http_is_a_path(cls, value: str | None) -> str | None:
        # The path goes into the probe's request line: a CR/LF or space would end it early.
        if value is not None and (problem := grammar.probe_path_problem(value)):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Probe:
        kinds = [
            k for k, on in (("http", self.http), ("tcp", self.tcp), ("command", self.command)) if on
        ]
        if len(kinds) > 1:
            raise ValueError(f"give one of http, tcp or command, not {' and '.join(kinds)}")
        if self.timeout > self.interval and self.interval > 0:
            raise ValueError(
                f"timeout ({self.timeout:g}s) must not exceed interval ({self.interval:g}s)"
            )
        return self

    @property
    def kind(self) -> Literal["http", "tcp", "command"]:
        if self.http is not None:
            return "http"
        if self.command is not None:
            return "command"
        return "tcp"


class Health(Probe):
    """The default probe, optionally overridden separately for readiness and liveness.

    *Readiness* decides when an instance may take traffic; *liveness* decides when a running
    instance is broken and must be replaced. Both default to the probe given here.
    """

    readiness: Probe | None = None
    liveness: Probe | None = None

    def readiness_probe(self) -> Probe:
        return self.readiness or Probe(**self._probe_fields())

    def liveness_probe(self) -> Probe:
        return self.liveness or Probe(**self._probe_fields())

    def _probe_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude={"readiness", "liveness"})


class Route(_Strict):
    """Where NGINX sends traffic to this app: a host (optional) and a path prefix.

    Both follow ``kiln.spec.grammar``, the language the router renders, so an accepted route
    always makes a valid nginx.conf.
    """

    host: str | None = Field(
        default=None,
        description="Host header to match (any case; *.example.com for every subdomain);"
        " omit to match any host",
        json_schema_extra={"pattern": grammar.HOST_PATTERN, "maxLength": grammar.MAX_HOST_LENGTH},
    )
    path: str = Field(
        default="/",
        description="path prefix: / then ASCII letters, digits and " + grammar.PATH_CHARACTERS,
        json_schema_extra={"pattern": grammar.PATH_PATTERN, "maxLength": grammar.MAX_PATH_LENGTH},
    )

    @field_validator("host")
    @classmethod
    def _valid_host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if problem := grammar.host_problem(value):
            raise ValueError(problem)
        return grammar.normal_host(value)

    @field_validator("path")
    @classmethod
    def _valid_path(cls, value: str) -> str:
        if problem := grammar.path_problem(value):
            raise ValueError(problem)
        return value


class Resources(_Strict):
    cpus: Annotated[float, Field(ge=0.01, le=1024), BeforeValidator(_number_not_a_bool)] | None = (
        Field(default=None, description="CPU cores, e.g. 0.5 (Docker's minimum is 0.01)")
    )
    memory: Bytes | None = Field(default=None, description="memory limit, e.g. 128Mi")

    @field_validator("memory")
    @classmethod
    def _enough_memory(cls, value: int | None) -> int | None:
        if value is not None and value < 6 * 1024 * 1024:
            raise ValueError(f"must be at least 6Mi (Docker's minimum), got {value} bytes")
        return value


def _percent(value: object) -> object:
    """``1%`` or ``0.5%`` → a fraction (0.01); a plain number is already a fraction."""
    if isinstance(value, bool):
        raise ValueError(f"expected a percentage like 1%, got {str(value).lower()}")
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?%", text):
            raise ValueError(f"expected a percentage like 1% or 0.5%, got {value[:40]!r}")
        return float(text[:-1]) / 100
    return value


Fraction = Annotated[
    float,
    BeforeValidator(_percent),
    Field(ge=0, le=1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?%$"},
            ]
        }
    ),
]
"""A share: ``1%`` or a fraction 0..1 (``0.01``)."""


class CanaryStep(_Strict):
    weight: Count = Field(ge=1, le=99, description="percent of requests the new release gets")
    pause: Seconds | None = Field(
        default=None, description="how long the step lasts; omitted: wait for `kiln promote`"
    )


class Analysis(_Strict):
    """Judge a canary on its real traffic, one window at a time."""

    interval: Seconds = Field(default=10.0, gt=0, description="length of one window")
    max_error_rate: Fraction = Field(
        default=0.01, description="share of 5xx among the release's requests in a window"
    )
    max_p95_ms: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="p95 latency limit (ms)"
    )
    max_p99_ms: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="p99 latency limit (ms)"
    )
    max_error_rate_increase: Fraction | None = Field(
        default=None, description="error rate above the stable release's in the same window"
    )
    min_requests: Count = Field(
        default=20, ge=1, description="fewer requests in a window → inconclusive"
    )
    failure_limit: Count = Field(
        default=2, ge=1, description="failing windows in a row that abort the rollout"
    )
    inconclusive_limit: Count = Field(
        default=6, ge=1, description="inconclusive windows in a row that fail (or pause) it"
    )
    on_inconclusive: Literal["fail", "pause"] = Field(
        default="fail", description="what inconclusive_limit does"
    )


class Deploy(_Strict):
    strategy: Strategy = Field(
        default=Strategy.ROLLING, description="rolling, recreate, blue-green or canary"
    )
    steps: list[CanaryStep] | None = Field(
        default=None,
        description="canary: traffic shares with pauses (default 10% for 1m, then 50% for 1m)",
    )
    canary_instances: (
        Annotated[int, Field(ge=1, le=MAX_INSTANCES), BeforeValidator(_not_a_bool)] | None
    ) = Field(default=None, description="canary: instances of the new release during the steps")
    rollback_window: Seconds = Field(
        default=300.0,
        description="blue-green and canary: the old release stays up and routable this long",
    )
    auto_promote_after: Seconds | None = Field(
        default=None,
        description="blue-green: switch after this much healthy time; omitted: `kiln promote`",
    )
    analysis: Analysis | None = Field(
        default=None, description="judge the new release on its real traffic"
    )
    max_surge: Count = Field(
        default=1, ge=0, le=MAX_INSTANCES, description="extra instances allowed during a rollout"
    )
    max_unavailable: Count = Field(
        default=0,
        ge=0,
        le=MAX_INSTANCES,
        description="ready instances that may be missing during a rollout",
    )
    deadline: Seconds = Field(
        default=120.0,
        gt=0,
        description="a rollout not done by then fails and rolls back to the last good release",
    )
    drain: Seconds = Field(
        default=30.0,
        description=(
            "after an instance leaves the router, the longest it keeps running for its "
            "requests in flight to finish (it stops as soon as they have)"
        ),
    )

    @model_validator(mode="after")
    def _steps_make_sense(self) -> Deploy:
        if self.steps is not None:
            if self.strategy is not Strategy.CANARY:
                raise ValueError("steps apply to strategy: canary only")
            if not self.steps:
                raise ValueError("steps: a canary needs at least one step")
            weights = [step.weight for step in self.steps]
            if any(b <= a for a, b in itertools.pairwise(weights)):
                raise ValueError(f"steps: weights must grow from step to step, got {weights}")
        if self.canary_instances is not None and self.strategy is not Strategy.CANARY:
            raise ValueError("canary_instances applies to strategy: canary only")
        if self.auto_promote_after is not None and self.strategy is not Strategy.BLUE_GREEN:
            raise ValueError("auto_promote_after applies to strategy: blue-green only")
        if self.analysis is not None and self.strategy is not Strategy.CANARY:
            raise ValueError("analysis applies to strategy: canary only")
        return self

    @model_validator(mode="after")
    def _can_progress(self) -> Deploy:
        if self.strategy is Strategy.ROLLING and self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError(
                "max_surge and max_unavailable cannot both be 0: the rollout could not start"
            )
        return self


class Security(_Strict):
    read_only: bool = Field(default=True, description="read-only root filesystem")
    cap_add: list[str] = Field(
        default_factory=list,
        max_length=MAX_CAPABILITIES,
        description="Linux capabilities to keep",
    )
    tmpfs: list[str] = Field(
        default_factory=lambda: ["/tmp"],
        max_length=MAX_TMPFS,
        description="writable in-memory directories: an absolute PATH, or PATH:OPTIONS"
        " (default options rw,nosuid,nodev,size=64m)",
    )

    @field_validator("cap_add")
    @classmethod
    def _capability_names(cls, value: list[str]) -> list[str]:
        bad = [c for c in value if not re.fullmatch(r"(CAP_)?[A-Z_]{1,60}", c)]
        if bad:
            raise ValueError(f"capabilities are names like NET_BIND_SERVICE, got {shown(bad)}")
        return [c.removeprefix("CAP_") for c in value]

    @field_validator("tmpfs")
    @classmethod
    def _absolute_paths(cls, value: list[str]) -> list[str]:
        problems: list[tuple[Loc, str]] = []
        seen: set[str] = set()
        for i, entry in enumerate(value):
            path, colon, options = entry.partition(":")
            if not _TMPFS_PATH.fullmatch(path) or path.strip("/") == "" or len(entry) > 1024:
                problems.append(
                    (
                        (i,),
                        "must be an absolute path other than / (no spaces, commas or colons),"
                        f" optionally followed by :OPTIONS, got {shown(entry)}",
                    )
                )
            elif colon and not (options and _TMPFS_OPTIONS.fullmatch(options)):
                problems.append(
                    ((i,), f"mount options are like size=64m,mode=1777, got {shown(options)}")
                )
            elif path.rstrip("/") in seen:
                problems.append(((i,), f"{path} is given twice"))
            seen.add(path.rstrip("/"))
        if problems:
            raise_problems("Security", problems)
        return value


class AppSpec(_Strict):
    """``kiln.yaml``: the declarative description of one app in one environment."""

    app: str = Field(
        description="app name, a lowercase DNS label",
        json_schema_extra={"pattern": NAME_PATTERN},
    )
    environment: str = Field(default="dev", json_schema_extra={"pattern": NAME_PATTERN})
    image: str = Field(
        min_length=1,
        max_length=MAX_IMAGE_LENGTH,
        description="image tag or digest; a tag is pinned to its digest at release",
    )
    command: Command | None = Field(default=None, description="overrides the image's command")
    env: dict[str, str] = Field(
        default_factory=dict,
        description=f"environment variables; at most {MAX_ENV_BYTES // 1024} KiB in all",
    )
    port: Port | None = Field(
        default=None, description="port the app listens on inside the instance"
    )
    instances: Count = Field(default=1, ge=0, le=MAX_INSTANCES)
    resources: Resources = Field(default_factory=Resources)
    health: Health | None = Field(
        default=None, description="health checks; default: tcp on port, or none without a port"
    )
    routes: list[Route] | None = Field(
        default=None,
        max_length=MAX_ROUTES,
        description="default: host <app>.<environment>.localhost, path /",
    )
    deploy: Deploy = Field(default_factory=Deploy)
    stop_grace: Seconds = Field(default=10.0, description="SIGTERM, then SIGKILL after this")
    security: Security = Field(default_factory=Security)
    network: Network = Field(
        default=Network.BRIDGE,
        description=(
            "bridge: the instance's own network, `port` published on an ephemeral 127.0.0.1 port;"
            " host: the host's network, the app listens on 127.0.0.1:$PORT (kiln picks PORT and"
            " sets HOST) — no network setup, so instances start about 0.2 s faster"
        ),
    )

    @field_validator("app", "environment")
    @classmethod
    def _names(cls, value: str) -> str:
        if problem := grammar.name_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("image")
    @classmethod
    def _image_reference(cls, value: str) -> str:
        if not value.isascii() or not value.isprintable() or " " in value:
            raise ValueError(
                f"must be an image reference like web:1.4 (visible ASCII), got {shown(value)}"
            )
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_values_are_strings(cls, value: object) -> object:
        # YAML turns `DEBUG: 1` into an int; an environment variable is always a string.
        if isinstance(value, dict):
            return {
                k: ("true" if v is True else "false" if v is False else str(v))
                if isinstance(v, int | float | bool)
                else v
                for k, v in value.items()
            }
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not _ENV_NAME.fullmatch(k)]
        if bad:
            raise ValueError(f"variable names are letters, digits and _, got {shown(bad)}")
        if "PORT" in value:
            raise ValueError("PORT is set by kiln from the port field")
        problems: list[tuple[Loc, str]] = []
        total = 0
        for name, text in value.items():
            size = len(text.encode())
            total += len(name) + 1 + size
            if len(name) > MAX_ENV_NAME_BYTES:
                problems.append(((name,), f"names are at most {MAX_ENV_NAME_BYTES} characters"))
            if "\x00" in text:
                problems.append(
                    ((name,), "contains a NUL character, which no environment variable can hold")
                )
            if size > MAX_ENV_VALUE_BYTES:
                problems.append(
                    (
                        (name,),
                        f"a value is at most {MAX_ENV_VALUE_BYTES // 1024} KiB, got {size} bytes",
                    )
                )
        if problems:
            raise_problems("env", problems)
        if total > MAX_ENV_BYTES:
            raise ValueError(
                f"at most {MAX_ENV_BYTES // 1024} KiB in all (every NAME=value), got {total} bytes"
            )
        return value

    @field_validator("routes")
    @classmethod
    def _distinct_routes(cls, value: list[Route] | None) -> list[Route] | None:
        if value is None:
            return None
        problems: list[tuple[Loc, str]] = []
        first: dict[tuple[str | None, str], int] = {}
        for i, route in enumerate(value):
            where = (route.host, route.path)
            if where in first:
                problems.append(
                    ((i,), f"same host and path as routes.{first[where]}: give each route once")
                )
            first.setdefault(where, i)
        if problems:
            raise_problems("routes", problems)
        return value

    @model_validator(mode="after")
    def _routes_and_probes_need_a_port(self) -> AppSpec:
        problems = []
        if self.port is None and self.routes:
            problems.append("routes need a port: set port to where the app listens")
        probes = [self.health, self.health.readiness, self.health.liveness] if self.health else []
        if self.port is None and any(p is not None and p.kind != "command" for p in probes):
            problems.append("http and tcp health checks need a port: set port or use command")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- derived views -----------------------------------------------------------------

    @property
    def key(self) -> str:
        return f"{self.environment}/{self.app}"

    def effective_routes(self) -> list[Route]:
        """The routes NGINX serves: the given ones, or ``<app>.<env>.localhost`` by default."""
        if self.port is None:
            return []
        if self.routes is not None:
            return list(self.routes)
        return [Route(host=f"{self.app}.{self.environment}.localhost", path="/")]

    def effective_health(self) -> Health | None:
        """The health checks in force; tcp on the port when none are given."""
        if self.health is not None:
            return self.health
        if self.port is not None:
            return Health(tcp=True)
        return None
