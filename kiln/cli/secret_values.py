"""Where the CLI reads secret values: stdin, a file, a hidden prompt — never an argument."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.errors import InvalidInput, KilnError

if TYPE_CHECKING:
    from kiln.client import KilnClient


def read_value(from_file: Path | None, name: str) -> bytes:
    from kiln.spec import MAX_SECRET_BYTES

    if from_file is not None:
        try:
            with from_file.open("rb") as stream:
                value = stream.read(MAX_SECRET_BYTES + 1)
        except OSError as exc:
            raise InvalidInput(f"cannot read {from_file}: {exc.strerror or exc}") from exc
    elif sys.stdin.isatty():
        value = getpass.getpass(f"value of {name} (not shown): ").encode()
    else:
        value = sys.stdin.buffer.read(MAX_SECRET_BYTES + 1)
    if len(value) > MAX_SECRET_BYTES:
        raise InvalidInput(f"a secret is at most {MAX_SECRET_BYTES // 1024} KiB")
    if not value:
        raise InvalidInput(
            f"no value for {name}: pipe it on stdin, or give --from-file PATH; nothing was changed"
        )
    return value


def set_from_spec(kiln: KilnClient, text: str) -> list[str]:
    """Secrets a spec takes from a file or an environment variable at deploy time: each is
    stored as a new version when its value changed. Returns the names that changed."""
    from kiln.model import AppKey
    from kiln.spec import parse_spec

    try:
        spec = parse_spec(text)
    except KilnError:
        return []  # the server answers a bad spec with every problem
    key = AppKey(spec.environment, spec.app)
    changed = []
    for use in spec.secrets:
        if use.from_file is not None:
            value = read_value(Path(use.from_file).expanduser(), use.name)
        elif use.from_env is not None:
            if not os.environ.get(use.from_env):
                raise InvalidInput(
                    f"secrets: {use.name} comes from ${use.from_env}, which is not set;"
                    " nothing was deployed"
                )
            value = os.environ[use.from_env].encode()
        else:
            continue
        if kiln.set_secret(key, use.name, value).changed:
            changed.append(use.name)
    return changed
