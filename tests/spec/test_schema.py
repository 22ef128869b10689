"""The JSON Schema of kiln.yaml, for editors: well formed, and it accepts what kiln accepts."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from kiln.spec import grammar, spec_json_schema

# Keywords a JSON Schema may use here; pydantic-only spellings like "ge" would be ignored by
# editors and silently weaken the schema.
_KEYWORDS = {
    "$schema", "$defs", "$ref", "title", "description", "type", "properties", "required",
    "additionalProperties", "items", "anyOf", "enum", "const", "default", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems",
    "maxItems",
}  # fmt: skip


def _schemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every subschema (not the names under ``properties`` or ``$defs``)."""
    if isinstance(node, dict):
        yield node
        for key, value in node.items():
            if key in ("properties", "$defs"):
                for child in value.values():
                    yield from _schemas(child)
            elif key in ("items", "additionalProperties"):
                yield from _schemas(value)
            elif key == "anyOf":
                for child in value:
                    yield from _schemas(child)


def test_schema_is_json_with_the_top_level_fields() -> None:
    schema = json.loads(json.dumps(spec_json_schema()))

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "kiln.yaml"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"app", "image"}
    assert {"app", "image", "port", "instances", "env", "health", "routes", "deploy"} <= set(
        schema["properties"]
    )


def test_schema_uses_only_json_schema_keywords_and_every_ref_resolves() -> None:
    schema = spec_json_schema()

    for node in _schemas(schema):
        assert set(node) <= _KEYWORDS, set(node) - _KEYWORDS
        if "$ref" in node:
            assert node["$ref"].removeprefix("#/$defs/") in schema["$defs"]
        if "pattern" in node:
            re.compile(node["pattern"])


def test_schema_accepts_durations_and_sizes_as_strings() -> None:
    defs = spec_json_schema()["$defs"]
    drain = defs["Deploy"]["properties"]["drain"]
    memory = defs["Resources"]["properties"]["memory"]

    duration_pattern = next(s["pattern"] for s in drain["anyOf"] if s["type"] == "string")
    assert all(re.match(duration_pattern, text) for text in ("2s", "500ms", "1m30s", "2"))
    assert not re.match(duration_pattern, "soon")
    memory_types = json.dumps(memory)
    assert '"string"' in memory_types and '"integer"' in memory_types


def test_schema_documents_the_rollout_keys_and_the_defaults() -> None:
    schema = spec_json_schema()
    defs = schema["$defs"]

    assert defs["Strategy"]["enum"] == ["rolling", "blue-green", "canary", "recreate"]
    assert {
        "steps",
        "canary_instances",
        "rollback_window",
        "auto_promote_after",
        "analysis",
        "drain",
    } <= set(defs["Deploy"]["properties"])
    assert defs["Deploy"]["properties"]["drain"]["default"] == 30.0
    resources = defs["Resources"]["properties"]
    assert (resources["cpus"]["default"], resources["memory"]["default"]) == (0.5, 128 * 1024**2)
    assert resources["pids"]["default"] == 256
    share = defs["Analysis"]["properties"]["max_error_rate"]
    share_pattern = next(s["pattern"] for s in share["anyOf"] if s["type"] == "string")
    assert re.match(share_pattern, "1%") and re.match(share_pattern, "0.5%")
    user = schema["properties"]["user"]
    user_pattern = user["pattern"]  # next to anyOf: a pattern only applies to strings
    assert all(re.match(user_pattern, u) for u in ("1000", "1000:1000", "app", "app:staff"))
    assert not re.match(user_pattern, "a b")


def test_schema_patterns_are_the_grammar() -> None:
    defs = spec_json_schema()["$defs"]
    route = defs["Route"]["properties"]

    assert route["path"]["pattern"] == grammar.PATH_PATTERN
    assert route["host"]["pattern"] == grammar.HOST_PATTERN
    assert spec_json_schema()["properties"]["app"]["pattern"] == grammar.NAME_PATTERN
