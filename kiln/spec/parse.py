"""Spec pipeline: text → YAML → fill defaults → validate, collecting every problem at once.

parse_spec(text) ──size, UTF-8, NUL──▶ load_yaml ──▶ dict ──AppSpec.model_validate──▶ AppSpec
                       │ refused           │ refused        │ every problem
                       ▼                   ▼                ▼
                          SpecInvalid(["instances: must be ≥ 0, got -1", ...])

Pure and synchronous: no I/O, bounded in time and memory for any input up to
``MAX_SPEC_BYTES`` (and larger input is refused before it is looked at), so a server may run
it in a worker thread.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from kiln.errors import SpecInvalid
from kiln.spec.limits import MAX_PROBLEMS, MAX_SPEC_BYTES
from kiln.spec.model import DEFAULT_IDLE_INTERVAL, AppSpec
from kiln.spec.problems import PROBLEM, shown
from kiln.spec.safe_yaml import YamlRefused, load_yaml

# Fields that do not make a new release when they change: scaling adds or removes identical
# instances of the same release and never changes a running one.
_NOT_IN_RELEASE = frozenset({"instances"})


def parse_spec(text: str | bytes, *, source: str = "kiln.yaml") -> AppSpec:
    """Parse and validate a spec; raises ``SpecInvalid`` listing every problem.

    ``bytes`` must be UTF-8. Text over ``MAX_SPEC_BYTES`` (as UTF-8) is refused unread.
    """
    text = _checked_text(text, source)
    try:
        data = load_yaml(text)
    except YamlRefused as exc:
        raise SpecInvalid([str(exc)], source=source) from exc
    if data is None:
        raise SpecInvalid(["the file is empty: give at least app and image"], source=source)
    if not isinstance(data, Mapping):
        raise SpecInvalid(
            [f"the top level must be a mapping of fields, got {type(data).__name__}"], source=source
        )
    return validate_spec(data, source=source)


def _checked_text(text: str | bytes, source: str) -> str:
    too_big = f"the spec is larger than {MAX_SPEC_BYTES // 1024} KiB"
    if isinstance(text, bytes):
        if len(text) > MAX_SPEC_BYTES:
            raise SpecInvalid([f"{too_big} ({len(text)} bytes)"], source=source)
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecInvalid([_not_utf8(text, exc.start)], source=source) from None
    else:
        # A character is at least one byte: a longer str is too big whatever it holds.
        if len(text) > MAX_SPEC_BYTES:
            raise SpecInvalid([f"{too_big} ({len(text)} characters)"], source=source)
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:  # lone surrogates: bytes that were not UTF-8
            raise SpecInvalid([_not_utf8(text, exc.start)], source=source) from None
        if size > MAX_SPEC_BYTES:
            raise SpecInvalid([f"{too_big} ({size} bytes)"], source=source)
    nul = text.find("\x00")
    if nul >= 0:
        line, column = _position(text, nul)
        raise SpecInvalid(
            [f"line {line}, column {column}: a NUL character; a spec is text (YAML)"],
            source=source,
        )
    return text


def _not_utf8(text: str | bytes, offset: int) -> str:
    line, column = _position(text, offset)
    return (
        f"not UTF-8 text: line {line}, column {column} has a byte that is not UTF-8; save the"
        " file as UTF-8"
    )


def _position(text: str | bytes, offset: int) -> tuple[int, int]:
    """Line and column (from 1) of ``offset``; for bytes the column counts bytes."""
    before = text[:offset]
    lines = before.decode("latin-1") if isinstance(before, bytes) else before
    return lines.count("\n") + 1, len(lines) - (lines.rfind("\n") + 1) + 1


def validate_spec(data: Mapping[str, Any], *, source: str = "kiln.yaml") -> AppSpec:
    try:
        return AppSpec.model_validate(dict(data))
    except ValidationError as exc:
        problems = [describe_problem(e) for e in exc.errors()]
        if len(problems) > MAX_PROBLEMS:
            more = len(problems) - MAX_PROBLEMS
            problems = [*problems[:MAX_PROBLEMS], f"… and {more} more"]
        raise SpecInvalid(problems, source=source) from exc


_COMPARISONS = {
    "greater_than_equal": "≥",
    "greater_than": ">",
    "less_than_equal": "≤",
    "less_than": "<",
}


def describe_problem(error: ErrorDetails) -> str:
    """One line a person can act on: ``instances: must be ≥ 0, got -1``."""
    path = ".".join(_part(p) for p in error["loc"]) or "(top level)"
    kind = error["type"]
    ctx = error.get("ctx") or {}
    given = shown(error.get("input"))
    if kind == "missing":
        return f"{path}: is required"
    if kind == "extra_forbidden":
        return f"{path}: is not a known field (see `kiln schema`)"
    if kind in _COMPARISONS:
        bound = next(iter(ctx.values()), "?")
        return f"{path}: must be {_COMPARISONS[kind]} {bound}, got {given}"
    if kind == "too_long":
        return f"{path}: at most {ctx.get('max_length', '?')} entries, got {ctx.get('actual_length', 'more')}"
    if kind in ("value_error", PROBLEM):
        message = str(ctx.get("error", ctx.get("message", error["msg"])))
        return f"{path}: {message}" if error["loc"] else message
    if kind == "enum":
        return f"{path}: must be one of {ctx.get('expected', '?')}, got {given}"
    return f"{path}: {error['msg'][0].lower()}{error['msg'][1:]}, got {given}"


def _part(loc: str | int) -> str:
    # An env variable's name or an unknown field is part of the path: keep the path short too.
    text = str(loc)
    return text if len(text) <= 40 else text[:39] + "…"


def spec_hash(spec: AppSpec) -> str:
    """A stable hash of everything in the spec that defines a release (not ``instances``)."""
    payload = spec.model_dump(mode="json", exclude=set(_NOT_IN_RELEASE))
    # Added later: left out while empty, so a release made before they existed keeps its hash.
    for added in ("secrets", "volumes"):
        if not payload.get(added):
            payload.pop(added, None)
    health = payload.get("health") or {}
    for probe in (health, health.get("readiness") or {}, health.get("liveness") or {}):
        if probe.get("idle_interval") == DEFAULT_IDLE_INTERVAL:
            probe.pop("idle_interval")  # added later: the default keeps the old hash
    for volume in payload.get("volumes") or []:
        if not volume.get("read_only"):
            volume.pop("read_only", None)  # added later: a writable volume keeps its old hash
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``kiln.yaml``, for editors and ``kiln schema``."""
    schema = AppSpec.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kiln.yaml"
    return schema
