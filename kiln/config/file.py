"""kiln's settings file: ``$KILN_HOME/settings.yaml`` (or ``KILN_SETTINGS``), optional.

Environment variables say *where* kiln runs (home, ports, binaries); the settings file says how an
installation is run: which registry holds its images, how its environments are ordered and
gated, where the API's TLS certificate is, how long logs are kept. Every section is optional and
has a default, so no file at all is a working installation.

Each section is a frozen pydantic model that refuses unknown keys, so a typo is an error that
names the key rather than a setting silently ignored. One section per capability; a capability
adds its fields to its own section and nowhere else.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from kiln.errors import InvalidInput

MAX_SETTINGS_BYTES = 256 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistrySettings(_Section):
    """The artifact repository: where releases' images live, pinned by digest.

    Without ``url`` kiln runs its embedded registry (``docker-registry``) on 127.0.0.1, storage
    under ``$KILN_HOME/registry``, on ``port`` (default: a free port chosen once and kept, since
    releases name it). With ``url`` (``https://registry.example.com`` or ``10.0.0.5:5000``)
    kiln pins releases to that registry instead, logging in with ``username`` and the password
    read from ``password_file``.

    ``kiln images prune`` keeps the images of each app's last ``retain_releases`` releases per
    environment, of everything running, and of releases inside a rollback window.
    """

    url: str | None = None
    username: str | None = None
    password_file: Path | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    retain_releases: int = Field(default=10, ge=1, le=10_000)

    @model_validator(mode="after")
    def _login_needs_both(self) -> RegistrySettings:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together")
        if self.url is None and self.username is not None:
            raise ValueError("username and password_file are for a registry named by url")
        return self


_NAME = re.compile(r"[a-z]([a-z0-9-]{0,38}[a-z0-9])?")
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?")
_MAX_SOAK = 30 * 24 * 3600.0


def _seconds(value: object) -> object:
    """``10m``, ``1h30m``, ``45s`` or a number of seconds (the spec's duration words; config sits
    below the spec layer, so the few forms a soak needs are read here)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 10m, got {str(value).lower()}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        match = _DURATION.fullmatch(text)
        if text and match and any(match.groups()):
            hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
            return hours * 3600 + minutes * 60 + seconds
    raise ValueError(f"expected a duration like 10m, 1h30m, 45s or seconds, got {value!r:.80}")


SoakSeconds = Annotated[float, BeforeValidator(_seconds), Field(ge=0, le=_MAX_SOAK)]


class EnvironmentGate(_Section):
    """What a release must show before it is promoted *into* this environment."""

    min_soak: SoakSeconds = Field(
        default=0.0,
        description="how long the source release must have been live and healthy in the "
        "environment before (10m, 1h, or seconds)",
    )
    approval: Literal["required", "none"] = Field(
        default="none",
        description="required: `kiln approve APP --env ENV --release N` before a promotion",
    )


DEFAULT_ORDER = ("dev", "staging", "production")
DEFAULT_GATES = {"production": EnvironmentGate(min_soak=600.0)}
"""Production takes only what ran 10 minutes in staging; no approval unless the file asks."""


class EnvironmentsSettings(_Section):
    """The order of environments and their promotion gates.

    ```yaml
    environments:
      order: [dev, staging, production]        # promotion goes one step along this order
      gates:
        production: {min_soak: 10m, approval: required}
    ```

    Defaults: the order above; ``production`` needs 10 minutes of soak in staging and no
    approval; every other environment has no gate (soak 0, no approval). ``gates`` given in the
    file replaces the default gates as a whole.
    """

    order: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ORDER), min_length=1, max_length=20
    )
    gates: dict[str, EnvironmentGate] = Field(default_factory=lambda: dict(DEFAULT_GATES))

    @model_validator(mode="after")
    def _known_names(self) -> EnvironmentsSettings:
        problems = [
            f"order: {name!r} is not an environment name (lowercase letters, digits, -)"
            for name in self.order
            if not _NAME.fullmatch(name)
        ]
        if len(set(self.order)) != len(self.order):
            problems.append("order: an environment is listed twice")
        problems += [
            f"gates.{name}: not in order {self.order}; add it there or remove its gate"
            for name in self.gates
            if name not in self.order
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def gate(self, environment: str) -> EnvironmentGate:
        return self.gates.get(environment, EnvironmentGate())

    def previous(self, environment: str) -> str | None:
        """The environment a promotion into ``environment`` comes from (None: the first)."""
        if environment not in self.order:
            return None
        index = self.order.index(environment)
        return self.order[index - 1] if index > 0 else None


class TlsSettings(_Section):
    """A certificate (PEM, its chain after it) and its private key (PEM, unencrypted)."""

    cert: Path
    key: Path


class ApiSettings(_Section):
    """The API listener. ``tls: {cert: PATH, key: PATH}``: the opt-in TCP listener speaks
    HTTPS with this certificate (the unix socket stays plain: only its owner can open it).
    Clients verify it against the system's CAs, or ``KILN_CA`` for a private CA or a
    self-signed certificate."""

    tls: TlsSettings | None = None


class LogsSettings(_Section):
    """Retention of instance and router logs.

    Every instance's stdout and stderr is kept under ``$KILN_HOME/logs`` past the instance's
    life, per app at most ``max_bytes_per_app`` and ``max_age`` seconds old (the oldest files
    go first). NGINX's access and error logs are rotated once a file passes
    ``router_max_bytes`` or ``router_max_age`` seconds (NGINX reopens its files: no reload, no
    line lost), keeping ``router_keep`` old files. ``format: json`` makes kiln's own log JSON
    lines.
    """

    max_bytes_per_app: int = Field(default=50 * 1024 * 1024, ge=64 * 1024)
    max_file_bytes: int = Field(default=5 * 1024 * 1024, ge=4 * 1024)
    max_age: float = Field(default=7 * 24 * 3600.0, gt=0)
    router_max_bytes: int = Field(default=50 * 1024 * 1024, ge=4 * 1024)
    router_max_age: float = Field(default=24 * 3600.0, gt=0)
    router_keep: int = Field(default=5, ge=1, le=100)
    format: Literal["text", "json"] = "text"


class AuditSettings(_Section):
    """Retention of refused calls (401, 403) in the audit log.

    Anyone who can reach the API can make refused calls, so they are not kept for good: at
    most ``refused_max_entries`` of them (the oldest go first) and none older than
    ``refused_max_age`` seconds, trimmed as refused calls are written. Every other entry (a
    change, ok or failed) is kept for good."""

    refused_max_entries: int = Field(default=10_000, ge=100, le=10_000_000)
    refused_max_age: float = Field(default=30 * 24 * 3600.0, ge=3600)


class WebhookSettings(_Section):
    """One receiver of events: kiln POSTs each event of ``types`` (categories such as
    ``rollout``, or kinds such as ``rollout.failed``; empty: every kind) as JSON to ``url``,
    signed with ``X-Kiln-Signature: sha256=HEX`` (HMAC-SHA256 of the body with the secret read
    from ``secret_file``), retrying with backoff up to ``max_attempts`` times.

    ``types`` are checked against kiln's event kinds when kiln starts. Delivery is at least once
    across restarts: events kiln had not sent when it stopped are sent by the next start (the
    newest 1,000, none older than 24 h); ``X-Kiln-Delivery`` (the event id) names duplicates."""

    url: str = Field(pattern=r"^https?://\S+$")
    types: tuple[str, ...] = ()
    secret_file: Path | None = None
    max_attempts: int = Field(default=5, ge=1, le=20)
    timeout: float = Field(default=5.0, gt=0, le=60)


class MetricsSettings(_Section):
    """``GET /metrics`` (Prometheus text format). ``enabled: false`` turns the endpoint and the
    background sampling of instance CPU and memory off; ``sample_interval`` is how often (in
    seconds) that sampling runs."""

    enabled: bool = True
    sample_interval: float = Field(default=5.0, ge=0.5, le=3600)


class EventsSettings(_Section):
    """Outgoing webhooks on chosen event types."""

    webhooks: tuple[WebhookSettings, ...] = ()


class DriftSettings(_Section):
    """Drift checks: every ``interval`` seconds each running instance is compared with its
    release (one inspect, plus a ``docker diff`` when its root filesystem is writable), at
    most ``concurrency`` at a time, spread over half the interval. ``interval: 0`` checks only
    on demand (``kiln drift``). Every 5 minutes by default: one check is an inspect and a diff
    through the engine's API, ~3 ms of kiln's CPU (bench/scale.py), so at 300 instances every
    minute it was ~1.5 % of a core on its own, for changes someone made by hand."""

    interval: float = Field(default=300.0, ge=0, le=86_400)
    concurrency: int = Field(default=4, ge=1, le=64)


class HealthSettings(_Section):
    """Health checks of quiet apps. An app with routes whose NGINX counted no request for
    ``quiet_after`` (and no rollout in progress) is *quiet*: its instances are checked every
    ``health.idle_interval`` of their spec (30 s unless it says otherwise) instead of every
    ``interval``, and at once when a request comes again (kiln looks at NGINX's counters every
    few seconds). A crashed instance is replaced the moment the engine says so either way.
    ``quiet_after: 0`` keeps every app at its ``interval``."""

    quiet_after: Annotated[float, BeforeValidator(_seconds), Field(ge=0, le=86_400)] = 60.0


class FileSettings(_Section):
    """The whole file. A missing file is ``FileSettings()``: every default."""

    registry: RegistrySettings = RegistrySettings()
    environments: EnvironmentsSettings = EnvironmentsSettings()
    api: ApiSettings = ApiSettings()
    logs: LogsSettings = LogsSettings()
    audit: AuditSettings = AuditSettings()
    events: EventsSettings = EventsSettings()
    metrics: MetricsSettings = MetricsSettings()
    drift: DriftSettings = DriftSettings()
    health: HealthSettings = HealthSettings()


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def load_file_settings(path: Path) -> FileSettings:
    """Read and check the settings file; every problem is reported at once, with its key."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return FileSettings()
    except OSError as exc:
        raise InvalidInput(f"cannot read the settings file {path}: {exc.strerror}") from exc
    if len(raw) > MAX_SETTINGS_BYTES:
        raise InvalidInput(
            f"the settings file {path} is {len(raw)} bytes; at most {MAX_SETTINGS_BYTES} are read"
        )
    # Imported here: PyYAML costs ~10 ms of every CLI command, and most installations have no
    # settings file to read (kiln/cli/README.md, "Start-up").
    import yaml

    try:
        data: Any = yaml.safe_load(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"the settings file {path} is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(f"the settings file {path} must be a mapping of sections")
    try:
        return FileSettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_location(error['loc'])}: {error['msg']}" for error in exc.errors())
        raise InvalidInput(f"the settings file {path} has problems: {problems}") from exc
