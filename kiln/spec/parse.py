"""Spec pipeline: text → YAML → fill defaults → validate, collecting every problem at once.

parse_spec(text) ──yaml.safe_load──▶ dict ──AppSpec.model_validate──▶ AppSpec
                                                │ (every problem)
                                                ▼
                                       SpecInvalid(["instances: must be ≥ 0, got -1", ...])
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from kiln.errors import SpecInvalid
from kiln.spec.model import AppSpec

# Fields that do not make a new release when they change: scaling adds or removes identical
# instances of the same release and never changes a running one.
_NOT_IN_RELEASE = frozenset({"instances"})


def parse_spec(text: str, *, source: str = "kiln.yaml") -> AppSpec:
    """Parse and validate a spec; raises ``SpecInvalid`` listing every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecInvalid([f"not valid YAML{where}: {problem}"], source=source) from exc
    if data is None:
        raise SpecInvalid(["the file is empty: give at least app and image"], source=source)
    if not isinstance(data, Mapping):
        raise SpecInvalid(
            [f"the top level must be a mapping of fields, got {type(data).__name__}"], source=source
        )
    return validate_spec(data, source=source)


def validate_spec(data: Mapping[str, Any], *, source: str = "kiln.yaml") -> AppSpec:
    try:
        return AppSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecInvalid([describe_problem(e) for e in exc.errors()], source=source) from exc


def describe_problem(error: ErrorDetails) -> str:
    """One line a person can act on: ``instances: must be ≥ 0, got -1``."""
    path = ".".join(str(p) for p in error["loc"]) or "(top level)"
    kind = error["type"]
    ctx = error.get("ctx") or {}
    given = error.get("input")
    if kind == "missing":
        return f"{path}: is required"
    if kind == "extra_forbidden":
        return f"{path}: is not a known field (see `kiln schema`)"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        symbol = {
            "greater_than_equal": "≥",
            "greater_than": ">",
            "less_than_equal": "≤",
            "less_than": "<",
        }[kind]
        bound = next(iter(ctx.values()), "?")
        return f"{path}: must be {symbol} {bound}, got {given!r}"
    if kind == "string_pattern_mismatch":
        return f"{path}: must be a lowercase name (a-z, 0-9, -), got {given!r}"
    if kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
        return f"{path}: {message}" if error["loc"] else message
    if kind == "enum":
        return f"{path}: must be one of {ctx.get('expected', '?')}, got {given!r}"
    return f"{path}: {error['msg'][0].lower()}{error['msg'][1:]}, got {given!r}"


def spec_hash(spec: AppSpec) -> str:
    """A stable hash of everything in the spec that defines a release (not ``instances``)."""
    payload = spec.model_dump(mode="json", exclude=set(_NOT_IN_RELEASE))
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``kiln.yaml``, for editors and ``kiln schema``."""
    schema = AppSpec.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kiln.yaml"
    return schema
