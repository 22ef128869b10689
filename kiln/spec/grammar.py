"""The route language: app and environment names, hosts and path prefixes. One definition.

The spec validates ``routes``, ``app`` and ``environment`` with it, and the router's renderer
checks every route against it before writing nginx.conf, so a spec that is accepted always
renders: a release can never be stored that would then break every other app's routes.

The path alphabet is the set of characters that mean nothing to NGINX's config parser (no
quotes, ``;``, braces, ``#``, ``$``, whitespace, backslash) so a path is written unquoted and
read back as itself. NGINX matches a location against the *decoded* request path, so a ``%``
in a route path matches a literal ``%`` (a request for ``/a%2520b`` reaches ``/a%20b``).

The ``*_PATTERN`` strings are for pydantic, FastAPI and the JSON Schema (Rust / ECMA regex,
where ``$`` is the end of the text). Python code uses the ``is_*`` / ``*_problem`` helpers,
which match the whole string (``re.match`` with ``$`` would accept a trailing newline).
"""

from __future__ import annotations

import re

from kiln.spec.problems import shown

MAX_NAME_LENGTH = 40
NAME_PATTERN = r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$"
"""App and environment names: lowercase DNS labels starting with a letter, ≤ 40 characters."""

MAX_HOST_LENGTH = 253
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_PATTERN = rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$"
"""A host name (ASCII; labels ≤ 63 characters), optionally ``*.`` for every subdomain.
Case does not matter: kiln stores and routes the lowercase form."""

MAX_PATH_LENGTH = 1024
PATH_CHARACTERS = "- . _ ~ / @ : + , = %"
PATH_PATTERN = r"^/[A-Za-z0-9\-._~/@:+,=%]*$"
"""A route's path prefix: ``/`` then ASCII letters, digits and ``- . _ ~ / @ : + , = %``."""

PROBE_PATH_PATTERN = r"^/[!-~]*$"
"""An HTTP probe's path (and query): ``/`` then visible ASCII, no spaces or control
characters — it is written into the probe's request line as it is."""

_NAME = re.compile(NAME_PATTERN.strip("^$"))
_HOST = re.compile(HOST_PATTERN.strip("^$"))
_PATH = re.compile(PATH_PATTERN.strip("^$"))
_PROBE_PATH = re.compile(PROBE_PATH_PATTERN.strip("^$"))


def is_name(value: str) -> bool:
    return _NAME.fullmatch(value) is not None


def name_problem(value: str) -> str | None:
    """Why ``value`` is not an app or environment name, or None."""
    if is_name(value):
        return None
    return (
        "must be a lowercase name (a-z, 0-9, -; starts with a letter, at most "
        f"{MAX_NAME_LENGTH} characters), got {shown(value)}"
    )


def host_problem(value: str) -> str | None:
    """Why ``value`` is not a route host (any case), or None."""
    if len(value) <= MAX_HOST_LENGTH and _HOST.fullmatch(value):
        return None
    return (
        "must be a host name like web.example.com or *.example.com (ASCII letters, digits and"
        f" -; xn-- for international names; at most {MAX_HOST_LENGTH} characters), "
        f"got {shown(value)}"
    )


def normal_host(value: str) -> str:
    """The form kiln stores and routes: lowercase. Only for values ``host_problem`` accepts."""
    return value.lower()


def path_problem(value: str) -> str | None:
    """Why ``value`` is not a route path prefix, or None."""
    if len(value) <= MAX_PATH_LENGTH and _PATH.fullmatch(value):
        return None
    return (
        f"must start with / and use only ASCII letters, digits and {PATH_CHARACTERS} "
        f"(at most {MAX_PATH_LENGTH} characters), got {shown(value)}"
    )


def probe_path_problem(value: str) -> str | None:
    """Why ``value`` cannot be the path of an HTTP probe, or None."""
    if len(value) <= MAX_PATH_LENGTH and _PROBE_PATH.fullmatch(value):
        return None
    return (
        "must be a path starting with / in visible ASCII (no spaces or control characters;"
        f" at most {MAX_PATH_LENGTH} characters), got {shown(value)}"
    )
