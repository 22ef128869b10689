"""The validated shape of ``kiln.yaml``.

Every model is frozen and forbids unknown fields, so a typo (``imagee:``) is a problem with its
field path instead of a silently ignored line. Defaults are chosen so that a four-line spec
(``app``, ``image``, ``port``, ``instances``) deploys a health-checked, routed, rolling app with
bounded resources. A spec that validates can run: what an engine, NGINX or a probe would only
refuse later (a relative tmpfs path, a NUL in a variable, a route NGINX cannot parse) is refused
here, when the release is created. Checks that depend on the host are in ``runnable``.

Stored releases are validated by this model again when they are read, so a field added later
must have a default, and a default must never make an old release's spec invalid.
"""

from __future__ import annotations

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
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import ErrorDetails

from kiln.spec import grammar
from kiln.spec.grammar import NAME_PATTERN
from kiln.spec.limits import (
    MAX_CAPABILITIES,
    MAX_COMMAND_ARGS,
    MAX_COMMAND_BYTES,
    MAX_ENV_BYTES,
    MAX_ENV_NAME_BYTES,
    MAX_ENV_VALUE_BYTES,
    MAX_ENVIRONMENTS,
    MAX_IMAGE_LENGTH,
    MAX_INSTANCES,
    MAX_PIDS,
    MAX_ROUTES,
    MAX_STEPS,
    MAX_TMPFS,
)
from kiln.spec.problems import Loc, raise_problems, shown
from kiln.spec.stateful import MAX_SECRETS, MAX_VOLUMES, SecretUse, Volume, secret_use
from kiln.spec.units import (
    DURATION_PATTERN,
    MAX_INT64,
    PERCENT_PATTERN,
    SIZE_PATTERN,
    parse_duration,
    parse_fraction,
    parse_size,
)

__all__ = ["NAME_PATTERN"]  # re-exported: the API and the CLI check names with it

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USER_PART = r"([A-Za-z_][A-Za-z0-9_.-]{0,31}|[0-9]{1,10})"
USER_PATTERN = rf"^{_USER_PART}(:{_USER_PART})?$"
"""``user``: a user name or uid, optionally ``:group`` or ``:gid``."""
_USER = re.compile(USER_PATTERN.strip("^$"))
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel
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


Fraction = Annotated[
    float,
    BeforeValidator(parse_fraction),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {"type": "string", "pattern": PERCENT_PATTERN},
            ]
        }
    ),
]
"""A share, kept as a fraction 0..1; accepts ``1%``, ``0.5%`` or a fraction like ``0.01``."""


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

Milliseconds = Annotated[float, Field(gt=0, le=3_600_000), BeforeValidator(_number_not_a_bool)]
"""A latency in milliseconds (at most an hour); a boolean is a problem, not 0.0 or 1.0."""

# The bounds come before the validator so pydantic writes them into the JSON Schema as
# minimum/maximum (after it, inside ``| None``, they would leak out as "ge"/"le").
Port = Annotated[int, Field(ge=1, le=65535), BeforeValidator(_not_a_bool)]


def _utf8_size(value: str) -> int:
    """Bytes as UTF-8; a lone surrogate (JSON can carry one) is a problem, not a crash."""
    try:
        return len(value.encode())
    except UnicodeEncodeError:
        raise ValueError(
            f"is not valid Unicode text (a lone surrogate), got {shown(value)}"
        ) from None


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(f"contains a NUL character, which no program can be given: {shown(value)}")
    _utf8_size(value)
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
    size = sum(_utf8_size(v) for v in value)
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


class DriftAction(StrEnum):
    REPLACE = "replace"
    REPORT = "report"


class Strategy(StrEnum):
    ROLLING = "rolling"
    BLUE_GREEN = "blue-green"
    CANARY = "canary"
    RECREATE = "recreate"


DEFAULT_IDLE_INTERVAL = 30.0
"""Seconds between checks of an instance of a quiet app (no requests lately): a box of idle
apps should not connect to each instance every second (bench/scale.py)."""


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
    idle_interval: Seconds = Field(
        default=DEFAULT_IDLE_INTERVAL,
        description="time between checks while the app gets no requests (kiln's setting"
        " health.quiet_after says how long without one); never shorter than interval."
        " 0: every interval, idle or not",
    )
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
    """Limits of one instance. ``null`` for a field means no limit."""

    cpus: Annotated[float, Field(ge=0.01, le=1024), BeforeValidator(_number_not_a_bool)] | None = (
        Field(default=0.5, description="CPU cores, e.g. 0.5; null: no limit")
    )
    memory: Bytes | None = Field(
        default=128 * 1024**2,
        description="memory limit (swap included), e.g. 128Mi; null: no limit",
    )
    pids: Annotated[int, Field(ge=4, le=MAX_PIDS), BeforeValidator(_not_a_bool)] | None = Field(
        default=256,
        description="processes and threads at most (room for the init, the app and a command"
        " probe: at least 4); null: no limit",
    )

    @field_validator("memory")
    @classmethod
    def _enough_memory(cls, value: int | None) -> int | None:
        if value is not None and value < 6 * 1024 * 1024:
            raise ValueError(f"must be at least 6Mi (Docker's minimum), got {value} bytes")
        return value


class CanaryStep(_Strict):
    """One canary step: send ``weight`` percent of the traffic to the new release, then wait."""

    weight: Count = Field(ge=1, le=99, description="percent of requests for the new release")
    pause: Seconds | None = Field(
        default=None,
        description="how long to stay at this weight; omit to wait for `kiln promote`",
    )


DEFAULT_CANARY_STEPS = (CanaryStep(weight=10, pause=60.0), CanaryStep(weight=50, pause=60.0))
"""The steps of a canary that gives none (kept on the release, like every default)."""


class Analysis(_Strict):
    """Verdicts on a release from its real traffic, one per ``interval`` window.

    A window with fewer than ``min_requests`` requests is inconclusive. A window fails when any
    limit given is exceeded; ``failure_limit`` failing windows in a row abort the rollout and
    roll back; ``inconclusive_limit`` inconclusive windows in a row fail it too, or pause it
    with ``on_inconclusive: pause``. Shares are fractions 0..1 (``1%`` is 0.01).
    """

    interval: Seconds = Field(default=10.0, ge=1, description="length of one window")
    max_error_rate: Fraction = Field(
        default=0.01, description="share of 5xx answers among the release's requests"
    )
    max_error_rate_increase: Fraction | None = Field(
        default=None,
        description="optional: how much the error rate may exceed the stable release's in the"
        " same window",
    )
    max_p95_ms: Milliseconds | None = Field(
        default=None, description="optional: 95th percentile latency, ms"
    )
    max_p99_ms: Milliseconds | None = Field(
        default=None, description="optional: 99th percentile latency, ms"
    )
    min_requests: Count = Field(
        default=20, ge=1, le=1_000_000_000, description="fewer in a window → inconclusive"
    )
    failure_limit: Count = Field(
        default=2, ge=1, le=1000, description="failing windows in a row → abort and roll back"
    )
    inconclusive_limit: Count = Field(
        default=6,
        ge=1,
        le=1000,
        description="inconclusive windows in a row → on_inconclusive",
    )
    on_inconclusive: Literal["fail", "pause"] = Field(
        default="fail", description="fail (roll back) or pause (wait for a person)"
    )


class Deploy(_Strict):
    """How a new release replaces the running one (see the strategies in the README)."""

    strategy: Strategy = Field(
        default=Strategy.ROLLING, description="rolling, recreate, blue-green or canary"
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
        description="a rollout (or a canary or blue-green step) whose new instances are not"
        " ready by then fails and rolls back to the last good release; pauses do not count",
    )
    drain: Seconds = Field(
        default=30.0,
        description="the longest an instance that left the router waits for its in-flight"
        " requests to finish before it is stopped",
    )
    steps: list[CanaryStep] | None = Field(
        default=None,
        description="canary only: traffic shares for the new release, in order; default"
        " 10% for 1m, then 50% for 1m",
    )
    canary_instances: (
        Annotated[int, Field(ge=1, le=MAX_INSTANCES), BeforeValidator(_not_a_bool)] | None
    ) = Field(
        default=None,
        description="canary only: instances of the new release during the steps; default:"
        " enough for the step's weight",
    )
    rollback_window: Seconds = Field(
        default=300.0,
        description="blue-green, and canary once promoted: the old release stays up and"
        " routable this long",
    )
    auto_promote_after: Seconds | None = Field(
        default=None,
        description="blue-green only: switch by itself after the new release was healthy this"
        " long; omit to wait for `kiln promote`",
    )
    analysis: Analysis | None = Field(
        default=None, description="judge each release on its real traffic; omit for no analysis"
    )

    @model_validator(mode="before")
    @classmethod
    def _canary_has_steps(cls, data: Any) -> Any:
        # Filled in here rather than by the planner, so a release keeps the steps it was made
        # with even if a later kiln changes the default.
        canary = isinstance(data, dict) and data.get("strategy") == Strategy.CANARY
        if canary and data.get("steps") is None:
            return {**data, "steps": [s.model_dump() for s in DEFAULT_CANARY_STEPS]}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Deploy:
        strategy = self.strategy
        if strategy is Strategy.ROLLING and self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError(
                "max_surge and max_unavailable cannot both be 0: the rollout could not start"
            )
        problems: list[tuple[Loc, str]] = []
        only = {
            "steps": Strategy.CANARY,
            "canary_instances": Strategy.CANARY,
            "auto_promote_after": Strategy.BLUE_GREEN,
            "analysis": Strategy.CANARY,  # the planner judges canary steps only
        }
        for field, owner in only.items():
            if getattr(self, field) is not None and strategy is not owner:
                problems.append(
                    (
                        (field,),
                        f"only strategy {owner} uses it (strategy is {strategy});"
                        f" remove it or set strategy: {owner}",
                    )
                )
        if self.steps is not None:
            problems.extend(_step_problems(self.steps))
        if problems:
            raise_problems("Deploy", problems)
        return self


def _step_problems(steps: list[CanaryStep]) -> list[tuple[Loc, str]]:
    if not steps:
        return [(("steps",), "give at least one step, or omit steps for the default")]
    if len(steps) > MAX_STEPS:
        return [(("steps",), f"at most {MAX_STEPS} steps, got {len(steps)}")]
    problems: list[tuple[Loc, str]] = []
    for i in range(1, len(steps)):
        if steps[i].weight <= steps[i - 1].weight:
            problems.append(
                (
                    ("steps", i, "weight"),
                    f"weights must increase from step to step: {steps[i].weight} follows"
                    f" {steps[i - 1].weight}",
                )
            )
    return problems


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
            bad_path = not _TMPFS_PATH.fullmatch(path) or not path.isprintable()
            if bad_path or path.strip("/") == "" or len(entry) > 1024:
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


OVERRIDABLE = ("instances", "env", "resources", "deploy", "routes")
"""What an environment may change. Everything else — above all the image — is the same in every
environment by construction: a promotion carries the release's exact digest."""

_NEVER_OVERRIDDEN = {
    "image": "the image is the same in every environment: a promotion carries the release's"
    " exact digest; build a new image and deploy it instead",
    "app": "an environment cannot rename the app",
    "environment": "the key under environments already names the environment",
}


class EnvironmentOverride(_Strict):
    """What one environment changes in the spec (``environments: {production: {...}}``).

    ``instances`` and ``routes`` replace the base's; ``env`` is merged by variable (``null``
    removes one); ``resources`` is merged by key; ``deploy`` replaces the base's deploy section
    as a whole (a deploy that mixed two strategies' keys could not be valid).
    """

    instances: (
        Annotated[int, Field(ge=0, le=MAX_INSTANCES), BeforeValidator(_not_a_bool)] | None
    ) = None
    env: dict[str, str | None] | None = Field(
        default=None, description="merged into env by name; null removes a variable"
    )
    resources: Resources | None = Field(default=None, description="merged into resources by key")
    deploy: Deploy | None = Field(default=None, description="replaces deploy as a whole")
    routes: list[Route] | None = Field(
        default=None, max_length=MAX_ROUTES, description="replaces routes"
    )
    image: SkipJsonSchema[Any] = Field(default=None, exclude=True)
    app: SkipJsonSchema[Any] = Field(default=None, exclude=True)
    environment: SkipJsonSchema[Any] = Field(default=None, exclude=True)

    @field_validator("image", "app", "environment", mode="before")
    @classmethod
    def _never_overridden(cls, value: object, info: ValidationInfo) -> object:
        raise ValueError(
            f"{_NEVER_OVERRIDDEN[str(info.field_name)]} (an environment may override only"
            f" {', '.join(OVERRIDABLE)})"
        )

    @field_validator("env", mode="before")
    @classmethod
    def _env_values_are_strings(cls, value: object) -> object:
        if isinstance(value, dict):
            return {
                k: ("true" if v is True else "false" if v is False else str(v))
                if isinstance(v, int | float | bool)
                else v
                for k, v in value.items()
            }
        return value


def _environment_name(value: str) -> str:
    if problem := grammar.name_problem(value):
        raise ValueError(f"an environment name: {problem}")
    return value


EnvironmentName = Annotated[str, AfterValidator(_environment_name)]


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
    user: str | None = Field(
        default=None,
        description="run as this user: a name or uid, optionally :group or :gid (1000,"
        " 1000:1000, app); default: the image's user",
        json_schema_extra={"pattern": USER_PATTERN},
    )
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
    secrets: list[Annotated[SecretUse, BeforeValidator(secret_use)]] = Field(
        default_factory=list,
        max_length=MAX_SECRETS,
        description="secrets the instances get, by name (values: `kiln secret set`); a release"
        " pins the version of each",
    )
    volumes: list[Volume] = Field(
        default_factory=list,
        max_length=MAX_VOLUMES,
        description="named volumes that outlive instances and releases",
    )
    environments: dict[EnvironmentName, EnvironmentOverride] | None = Field(
        default=None,
        description="per-environment overrides of "
        + ", ".join(OVERRIDABLE)
        + "; deploying to an environment applies its entry (the image is never overridden)",
    )
    drift: DriftAction = Field(
        default=DriftAction.REPLACE,
        description=(
            "an instance that differs from its release (image, env, command, mounts, limits,"
            " labels, or files changed outside tmpfs): replace it through the normal drain"
            " path, or only report it (an event and `kiln drift`)"
        ),
    )
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

    @field_validator("user", mode="before")
    @classmethod
    def _user_number_is_a_string(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _USER.fullmatch(value) or any(
            part.isdigit() and int(part) > _MAX_ID for part in value.split(":")
        ):
            raise ValueError(
                "must be a user name or uid, optionally :group or :gid (1000, 1000:1000, app),"
                f" got {shown(value)}"
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
            try:
                size = _utf8_size(text)
            except ValueError as exc:
                problems.append(((name,), str(exc)))
                continue
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

    @field_validator("environments")
    @classmethod
    def _environment_names(
        cls, value: dict[str, EnvironmentOverride] | None
    ) -> dict[str, EnvironmentOverride] | None:
        if value is None:
            return None
        if len(value) > MAX_ENVIRONMENTS:
            raise ValueError(f"at most {MAX_ENVIRONMENTS} environments, got {len(value)}")
        return value

    @model_validator(mode="after")
    def _every_environment_resolves(self) -> AppSpec:
        # Each environment's spec must be valid on its own (a canary there needs the base's
        # port; an env override must obey the env rules), so a deploy or a promotion to any of
        # them can never fail on the spec later: checked now, with the path into the override.
        if not self.environments:
            return self
        from kiln.spec.environments import merged_for

        problems: list[tuple[Loc, str]] = []
        for name in self.environments:
            try:
                AppSpec.model_validate(merged_for(self, name))
            except ValidationError as exc:
                for error in exc.errors():
                    problems.append((("environments", name, *error["loc"]), _message_of(error)))
        if problems:
            raise_problems("AppSpec", problems)
        return self

    @model_validator(mode="after")
    def _secrets_and_volumes(self) -> AppSpec:
        problems: list[tuple[Loc, str]] = []
        seen: set[str] = set()
        for i, use in enumerate(self.secrets):
            if use.name in seen:
                problems.append((("secrets", i), f"{use.name} is named twice"))
            seen.add(use.name)
            if use.delivery == "env" and (
                use.name in self.env or use.name in ("PORT", "HOST") or use.name.startswith("KILN_")
            ):
                problems.append(
                    (("secrets", i), f"{use.name} is also set by env: or by kiln; rename one")
                )
            if use.from_file is not None and use.from_env is not None:
                problems.append((("secrets", i), "from_file or from_env, not both"))
        names: set[str] = set()
        paths: set[str] = set()
        for i, volume in enumerate(self.volumes):
            if volume.name in names:
                problems.append((("volumes", i), f"{volume.name} is given twice"))
            if volume.path in paths:
                problems.append((("volumes", i), f"{volume.path} is mounted twice"))
            names.add(volume.name)
            paths.add(volume.path)
            if volume.read_only and volume.pre_snapshot is not None:
                problems.append(
                    (
                        ("volumes", i, "pre_snapshot"),
                        f"{volume.name} is read_only, so the app writes nothing there to"
                        " checkpoint: drop pre_snapshot (a snapshot copies it while the app runs)",
                    )
                )
            if volume.read_only:
                continue  # no writer: instances and releases may mount it together
            if not volume.shared and self.instances > 1:
                problems.append(
                    (
                        ("volumes", i),
                        f"{volume.name} is not shared, so it has one writer: instances must be 0"
                        f" or 1 (got {self.instances}), or set shared: true",
                    )
                )
            if not volume.shared and self.deploy.strategy in (
                Strategy.CANARY,
                Strategy.BLUE_GREEN,
            ):
                problems.append(
                    (
                        ("volumes", i),
                        f"{volume.name} is not shared, so two releases can never write it at"
                        f" once: {self.deploy.strategy} runs both; deploy with recreate or"
                        " rolling (kiln stops the old instance first), or set shared: true",
                    )
                )
        if problems:
            raise_problems("AppSpec", problems)
        return self

    def single_writer(self) -> bool:
        """A writable volume that is not shared: never two instances at once (recreate
        semantics). A read-only volume has no writer to protect."""
        return any(not v.shared and not v.read_only for v in self.volumes)

    @model_validator(mode="after")
    def _what_needs_a_port(self) -> AppSpec:
        if self.port is not None:
            return self
        # Without a port the app is a worker: nothing can reach it, so nothing may route to it.
        problems: list[tuple[Loc, str]] = []
        if self.routes:
            problems.append((("routes",), "need a port: set port to where the app listens"))
        probes = [self.health, self.health.readiness, self.health.liveness] if self.health else []
        if any(p is not None and p.kind != "command" for p in probes):
            problems.append(
                (("health",), "http and tcp checks need a port: set port or use command")
            )
        if self.deploy.strategy in (Strategy.CANARY, Strategy.BLUE_GREEN):
            problems.append(
                (
                    ("deploy", "strategy"),
                    f"{self.deploy.strategy} moves traffic, so it needs a port; a worker (no"
                    " port) deploys with rolling or recreate",
                )
            )
        if self.deploy.analysis is not None:
            problems.append(
                (
                    ("deploy", "analysis"),
                    "judges requests, so it needs a port; a worker (no port) has none",
                )
            )
        if problems:
            raise_problems("AppSpec", problems)
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


def _message_of(error: ErrorDetails) -> str:
    """The message of one nested problem, without its path (the caller puts the path in front)."""
    from kiln.spec.parse import describe_problem

    moved = error.copy()
    moved["loc"] = ("x",)
    return describe_problem(moved).removeprefix("x: ")
