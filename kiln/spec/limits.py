"""How much one spec may ask for. Every limit is named here, once.

Limits keep one release from hurting the rest: a spec is parsed in bounded time and memory
whatever its text, and nothing it asks for can exhaust the server, the router or the engine.
The API answers 413 for a body over ``MAX_SPEC_BYTES`` before it reads the rest.
"""

from __future__ import annotations

MAX_SPEC_BYTES = 256 * 1024
"""The spec's text, in UTF-8 bytes."""

MAX_YAML_DEPTH = 50
"""Collections nested in collections (a real spec needs about 6)."""

MAX_YAML_ALIASES = 100
"""Uses of ``*anchor`` in one spec."""

MAX_YAML_NODES = 100_000
"""Values in the document once every alias is expanded; about what 256 KiB of text can hold
without aliases, so aliases can never make a spec bigger than its size limit allows."""

MAX_PROBLEMS = 50
"""Problems listed in one error; the rest are counted ("… and 12 more")."""
