"""Turning HTTP answers back into ``kiln.errors``.

The server sends ``{"error": {"type": "not_found", "message": ..., "problems": [...]}}``;
``type`` is the snake_case name of a ``kiln.errors`` class, so the same class is raised here.
A server that cannot be reached at all is ``ServerUnreachable``; something that answers where
kiln should be but cannot prove it is this kiln is ``NotThisKiln`` (the CLI exits 5 for both).
"""

from __future__ import annotations

from typing import Any

import kiln.errors as kiln_errors
from kiln.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    KilnError,
    NotFound,
    PermanentFailure,
    SpecInvalid,
    TemporaryFailure,
    Unauthorized,
    wire_name,
)


class ServerUnreachable(TemporaryFailure):
    """Nothing answers at the kiln API address: the server is not running (or elsewhere)."""

    def __init__(self, where: str, detail: str = "") -> None:
        said = f" ({detail})" if detail else ""
        super().__init__(f"kiln is not running at {where}{said} — start it with `kiln up`")


class NotThisKiln(ServerUnreachable):
    """Something answers where kiln should, but it is not this kiln: the token was not sent.

    A program squatting on the API's TCP port (an app on the host network, say), another
    user's socket, or a kiln whose token is not the one this client holds.
    """

    def __init__(self, where: str, why: str) -> None:
        TemporaryFailure.__init__(
            self,
            f"something else is listening on {where}; it is not this kiln ({why}). Stop that "
            "program, or point kiln at its server: KILN_API_URL, KILN_API_HOST/KILN_API_PORT, "
            "or the unix socket (KILN_API_SOCKET, without KILN_API_TCP)",
        )


class UntrustedCertificate(NotThisKiln):
    """An https server whose certificate this client does not trust: the token was not sent."""

    def __init__(self, url: str, why: str) -> None:
        TemporaryFailure.__init__(
            self,
            f"the kiln API at {url} presented a certificate this client does not trust "
            f"({why}); the token was not sent. If kiln uses a private CA or a self-signed "
            "certificate, set KILN_CA to that CA's certificate file (PEM), e.g. the file "
            "api.tls.cert names in kiln's settings.yaml",
        )


def _error_classes() -> dict[str, type[KilnError]]:
    classes = {
        wire_name(obj): obj
        for obj in vars(kiln_errors).values()
        if isinstance(obj, type) and issubclass(obj, KilnError)
    }
    classes["internal"] = PermanentFailure
    return classes


_CLASSES = _error_classes()

_BY_STATUS: dict[int, type[KilnError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: InvalidInput,
    503: TemporaryFailure,
}


def error_from_body(status: int, body: Any, fallback_text: str = "") -> KilnError:
    """The ``KilnError`` an error answer stands for (``SpecInvalid`` keeps its ``problems``)."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        cls = _BY_STATUS.get(status, PermanentFailure if status >= 500 else KilnError)
        text = fallback_text.strip()[:300] or "no details"
        return cls(f"kiln answered HTTP {status}: {text}")
    kind = str(detail.get("type", ""))
    message = str(detail.get("message", "")) or f"kiln answered HTTP {status}"
    problems = [str(p) for p in detail.get("problems") or []]
    cls = _CLASSES.get(kind) or _BY_STATUS.get(status, PermanentFailure)
    if cls is SpecInvalid:
        return SpecInvalid(problems)
    return cls(message)
