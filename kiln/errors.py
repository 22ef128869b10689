"""kiln's one exception tree.

Every error kiln raises on purpose is a ``KilnError``. Errors from foreign libraries (the
Docker SDK, sqlite3, httpx, subprocess) are mapped to one of these at the boundary that
talks to that library, with ``raise ... from exc`` so the cause stays in the traceback.

    KilnError                     base; ``message`` is written for a person and says what to do
    ├── InvalidInput              the caller's fault, nothing was changed            (API 400/422)
    │   ├── SpecInvalid           a kiln.yaml with one or more problems (``problems``)
    │   └── ImageNotFound         the image reference does not exist on the engine
    ├── NotFound                  unknown app / release / instance                    (API 404)
    ├── Conflict                  the request contradicts current state               (API 409)
    │   └── GateRefused           a promotion gate failed; ``gates`` lists every failing one
    ├── Unauthorized              missing, wrong or revoked API token                 (API 401)
    │   └── Forbidden             the token's role or environments do not allow it    (API 403)
    ├── TemporaryFailure          retried by the next reconcile, with backoff         (API 503)
    │   ├── DriverUnavailable     the container engine does not answer
    │   ├── RouterUnavailable     NGINX or its admin endpoint does not answer
    │   └── RegistryUnavailable   the artifact repository (OCI registry) does not answer
    └── PermanentFailure          reported and not retried                            (API 500)
        └── RouterConfigRejected  a rendered nginx.conf failed ``nginx -t``

The split between temporary and permanent failures follows kopf: a temporary failure is
retried after a delay, a permanent one becomes an event and waits for a new desired state.
"""

from __future__ import annotations

import re


class KilnError(Exception):
    """Base of every error kiln raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(KilnError):
    """The input is wrong; nothing was changed."""


class SpecInvalid(InvalidInput):
    """A spec with one or more problems, each as ``"field.path: what is wrong"``."""

    def __init__(self, problems: list[str], *, source: str = "kiln.yaml") -> None:
        self.problems = list(problems)
        count = len(self.problems)
        header = f"{source} has {count} problem{'s' if count != 1 else ''}"
        super().__init__(header + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class ImageNotFound(InvalidInput):
    """The image reference does not resolve to an image the engine has."""


class NotFound(KilnError):
    """An app, release or instance that does not exist."""


class Conflict(KilnError):
    """The request cannot be applied to the current state."""


class GateRefused(Conflict):
    """A promotion that a gate refuses (soak, rollout, analysis, approval); nothing changed.
    The message lists every failing gate, one per line, each saying what to do."""

    def __init__(self, message: str, *, gates: list[str] | None = None) -> None:
        super().__init__(message)
        self.gates = list(gates or [])


class Unauthorized(KilnError):
    """Missing, wrong or revoked API token."""


class Forbidden(Unauthorized):
    """A valid token whose role or environments do not allow the call."""


class TemporaryFailure(KilnError):
    """A failure that the next reconcile retries, after a backoff."""


class DriverUnavailable(TemporaryFailure):
    """The container engine does not answer."""


class RouterUnavailable(TemporaryFailure):
    """NGINX or its admin endpoint does not answer."""


class RegistryUnavailable(TemporaryFailure):
    """The artifact repository (an OCI registry) does not answer."""


class PermanentFailure(KilnError):
    """A failure that is reported and not retried until the desired state changes."""


class RouterConfigRejected(PermanentFailure):
    """``nginx -t`` rejected a rendered configuration; the last good one stays in place."""


def wire_name(cls: type[KilnError]) -> str:
    """``SpecInvalid`` → ``spec_invalid``: the name of an error class in API answers."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
