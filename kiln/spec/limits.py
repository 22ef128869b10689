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

MAX_INSTANCES = 100
"""``instances``, ``deploy.max_surge``, ``deploy.max_unavailable``, ``deploy.canary_instances``."""

MAX_ROUTES = 100
"""Entries in ``routes``."""

MAX_ENV_BYTES = 64 * 1024
"""All of ``env`` together: the UTF-8 bytes of every ``NAME=value``."""

MAX_ENV_NAME_BYTES = 256
"""One variable's name."""

MAX_ENV_VALUE_BYTES = 32 * 1024
"""One variable's value."""

MAX_COMMAND_ARGS = 256
"""Program and arguments in ``command`` (and a probe's ``command``)."""

MAX_COMMAND_BYTES = 64 * 1024
"""All of one ``command`` together, in UTF-8 bytes."""

MAX_IMAGE_LENGTH = 1024
"""The image reference (registry, path, tag and digest)."""

MAX_STEPS = 20
"""Entries in ``deploy.steps``."""

MAX_TMPFS = 32
"""Entries in ``security.tmpfs``."""

MAX_CAPABILITIES = 64
"""Entries in ``security.cap_add`` (Linux has about 40)."""

MAX_PIDS = 4_194_304
"""``resources.pids``: Linux's own limit on process ids."""

MAX_PROBLEMS = 50
"""Problems listed in one error; the rest are counted ("… and 12 more")."""

MAX_ENVIRONMENTS = 20
"""Entries in a spec's ``environments`` (per-environment overrides)."""
