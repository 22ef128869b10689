"""Image references, as Docker spells them: ``[host[:port]/]path[:tag][@sha256:hex]``.

Pure (no I/O). The first path component is a registry host when it has a ``.`` or a ``:`` or is
``localhost`` (Docker's own rule); otherwise the reference names an image with no registry, as
an image built on the engine does (``kiln-demo:v1``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# The distribution spec's repository grammar, and its tag grammar.
_PATH = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class ImageReference:
    host: str | None  # "127.0.0.1:5000"; None: no registry named
    repository: str  # "kiln-demo", "team/web"
    tag: str | None = None
    digest: str | None = None  # "sha256:…" of the manifest

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}" if self.host else self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def pinned(self, host: str, digest: str) -> str:
        """``host/repository@digest``: the one form a release holds."""
        return f"{host}/{self.repository}@{digest}"


def is_digest(text: str) -> bool:
    return bool(_DIGEST.match(text))


def parse_reference(text: str) -> ImageReference | None:
    """The parts of ``text``, or None when it is not a reference (e.g. a bare ``sha256:…`` id)."""
    if not text or text != text.strip() or is_digest(text):
        return None
    rest, at, digest = text.partition("@")
    if at and not is_digest(digest):
        return None
    host: str | None = None
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        host, rest = first, remainder
    path, colon, tag = rest.rpartition(":")
    if not colon or "/" in tag:
        path, tag = rest, ""
    if not _PATH.match(path) or (tag and not _TAG.match(tag)):
        return None
    return ImageReference(host=host, repository=path, tag=tag or None, digest=digest or None)


def pinned_parts(text: str) -> tuple[str, str, str] | None:
    """``(host, repository, digest)`` of a release's pinned ``host/repo@sha256:…``, else None."""
    ref = parse_reference(text)
    if ref is None or ref.host is None or ref.digest is None:
        return None
    return ref.host, ref.repository, ref.digest
