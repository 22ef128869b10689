"""The home's API token: one random bearer token per kiln home, kept in a 0600 file.

The CLI on the same machine reads the same file (or ``KILN_TOKEN``), so a user never types it.
The server stores its hash as the first admin token (``local-token``); more tokens, with
roles, come from ``kiln token create`` (``kiln.api.access``, ``kiln.api.routes_access``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from kiln.config import refuse_unless_private

TOKEN_BYTES = 32


def load_or_create_token(path: Path) -> str:
    """The token stored at ``path``; a new one (written atomically, mode 0600) when absent.

    An existing token file that other users can read is refused (``InvalidInput`` saying
    ``chmod 600 <path>``): it may already have leaked, and kiln will not hand it out as proof.
    """
    refuse_unless_private(path)
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # O_EXCL + 0600 at creation: the token is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            # link() fails if another process created the token meanwhile: theirs wins.
            os.link(tmp, path)
        except FileExistsError:
            return path.read_text(encoding="utf-8").strip()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return token
