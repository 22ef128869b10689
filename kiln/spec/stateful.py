"""The spec's ``secrets:`` and ``volumes:``: what an app needs that outlives its instances.

A secret is named here, never given: its value lives encrypted in kiln's store
(``kiln secret set``), and a release pins the version it uses. A volume is a named engine
volume that keeps its data across instances and releases.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from kiln.spec.problems import shown

SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
"""A secret's name: a file name under /run/secrets and an environment variable name alike."""
VOLUME_NAME_PATTERN = r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$"
MAX_SECRETS = 64
MAX_VOLUMES = 16
MAX_SECRET_BYTES = 64 * 1024
"""One secret's value: at most 64 KiB (a key, a certificate chain, a password)."""

_SECRET_NAME = re.compile(SECRET_NAME_PATTERN.strip("^$"))
_VOLUME_NAME = re.compile(VOLUME_NAME_PATTERN.strip("^$"))
_MOUNT_PATH = re.compile(r"/[A-Za-z0-9._/@+=-]{1,1023}")
_RESERVED_PATHS = ("/run/secrets", "/proc", "/sys", "/dev")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def secret_name_problem(name: str) -> str | None:
    if _SECRET_NAME.fullmatch(name):
        return None
    return f"a secret name is letters, digits and _ (not starting with a digit), ≤ 64, got {shown(name)}"


class SecretUse(_Strict):
    """One secret an app's instances get: ``DB_PASSWORD`` or ``{name: DB_PASSWORD, as: env}``."""

    name: str = Field(
        description="the secret, as set with `kiln secret set APP NAME`",
        json_schema_extra={"pattern": SECRET_NAME_PATTERN},
    )
    delivery: Literal["file", "env"] = Field(
        default="file",
        validation_alias=AliasChoices("as", "delivery"),
        serialization_alias="as",
        description="file: /run/secrets/NAME on a tmpfs, mode 0400, owned by the instance's"
        " user; env: an environment variable NAME (visible to `docker inspect`)",
    )
    version: int | None = Field(
        default=None,
        ge=1,
        description="pin this version; default: the newest when the release is made",
    )
    from_file: str | None = Field(
        default=None,
        max_length=4096,
        description="at `kiln deploy`, the CLI reads the value from this file and stores it as"
        " a new version when it changed",
    )
    from_env: str | None = Field(
        default=None,
        max_length=256,
        description="at `kiln deploy`, the CLI reads the value from this environment variable",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if problem := secret_name_problem(value):
            raise ValueError(problem)
        return value


def secret_use(value: Any) -> Any:
    """A bare name is short for ``{name: NAME}``."""
    return {"name": value} if isinstance(value, str) else value


class Volume(_Strict):
    """A named volume: data that outlives instances and releases."""

    name: str = Field(
        description="a lowercase DNS label, ≤ 32; kiln scopes it to the app and environment",
        json_schema_extra={"pattern": VOLUME_NAME_PATTERN},
    )
    path: str = Field(description="where it is mounted inside the instance (absolute)")
    shared: bool = Field(
        default=False,
        description="false: one writer at a time — the app deploys with recreate semantics"
        " (old instances stop before new ones start) and canary / blue-green are refused;"
        " true: instances of two releases may use it at once",
    )
    read_only: bool = Field(
        default=False,
        strict=True,
        description="true: mounted read-only, a write fails with EROFS; the app has no writer of"
        " it, so the one-writer rule of shared: false does not apply (fill it with"
        " `kiln volume restore`)",
    )
    pre_snapshot: list[str] | None = Field(
        default=None,
        max_length=64,
        description="run inside a running instance before `kiln volume snapshot` copies the"
        " volume (e.g. a checkpoint); without it the app is stopped for the copy",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _VOLUME_NAME.fullmatch(value):
            raise ValueError(
                "a volume name is a lowercase DNS label (a-z, 0-9, -; starts with a letter;"
                f" ≤ 32), got {shown(value)}"
            )
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not _MOUNT_PATH.fullmatch(value) or value.strip("/") == "" or "/../" in value + "/":
            raise ValueError(
                "must be an absolute path other than / (letters, digits and . _ / @ + = -),"
                f" got {shown(value)}"
            )
        clean = value.rstrip("/")
        for reserved in _RESERVED_PATHS:
            if clean == reserved or clean.startswith(reserved + "/"):
                raise ValueError(f"{reserved} belongs to kiln and the engine; mount elsewhere")
        return clean
