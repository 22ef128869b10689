"""Master keys: what seals kiln's secrets at rest.

A master key is 32 random bytes (AES-256). Each is known by its **key id**, a fingerprint
(``sha256("kiln-master-key-id:" + key)``, 16 hex digits) that is safe to store and show: every
sealed secret records the id of the key it was sealed under, so a wrong key is told apart from
a tampered secret, and a rotation interrupted half-way knows what is left to do.

Where the keys come from, first match:

- ``KILN_MASTER_KEY``: base64 keys separated by commas, the first is current (the others are
  still accepted for reading: put the new key first, then ``kiln secret rotate-key``).
- ``$KILN_HOME/master.key`` (JSON ``{"current": ID, "keys": {ID: base64}}``, mode 0600 in a
  0700 home; created on first use; a file others can read is refused). ``kiln secret
  rotate-key`` adds a new current key here, re-encrypts every secret, then drops the old key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kiln.config import refuse_unless_private
from kiln.errors import InvalidInput, PermanentFailure

KEY_BYTES = 32
ENV_VAR = "KILN_MASTER_KEY"
FILE_NAME = "master.key"


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"kiln-master-key-id:" + key).hexdigest()[:16]


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


@dataclass(frozen=True)
class Keyring:
    current: str  # key id that seals new versions
    keys: Mapping[str, bytes]
    path: Path | None  # None: the keys come from KILN_MASTER_KEY and kiln cannot change them

    def __repr__(self) -> str:  # never the keys themselves
        return f"Keyring(current={self.current}, ids={sorted(self.keys)}, path={self.path})"

    def key(self, ident: str) -> bytes | None:
        return self.keys.get(ident)

    def with_new_current(self) -> Keyring:
        key = new_key()
        return Keyring(key_id(key), {**self.keys, key_id(key): key}, self.path)

    def without(self, idents: set[str]) -> Keyring:
        return Keyring(
            self.current, {k: v for k, v in self.keys.items() if k not in idents}, self.path
        )


def load_keyring(home: Path, environ: Mapping[str, str] | None = None) -> Keyring:
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR):
        return _from_env(env[ENV_VAR])
    path = home / FILE_NAME
    if not path.exists():
        key = new_key()
        ring = Keyring(key_id(key), {key_id(key): key}, path)
        save_keyring(ring, exclusive=True)
    refuse_unless_private(path)
    try:
        data = json.loads(path.read_text())
        keys = {str(k): base64.b64decode(v, validate=True) for k, v in data["keys"].items()}
        current = str(data["current"])
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise PermanentFailure(
            f"the master key file {path} cannot be read ({type(exc).__name__}): restore it from"
            f" your backup, or set {ENV_VAR}"
        ) from exc
    bad = [i for i, k in keys.items() if len(k) != KEY_BYTES or key_id(k) != i]
    if bad or current not in keys:
        raise PermanentFailure(
            f"the master key file {path} is damaged (key ids {bad or [current]} do not match"
            f" their keys): restore it from your backup, or set {ENV_VAR}"
        )
    return Keyring(current, keys, path)


def save_keyring(ring: Keyring, *, exclusive: bool = False) -> None:
    """Write the key file atomically (a new file, fsynced, renamed over the old one)."""
    assert ring.path is not None
    path = ring.path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = json.dumps(
        {
            "current": ring.current,
            "keys": {i: base64.b64encode(k).decode() for i, k in ring.keys.items()},
        },
        indent=1,
    ).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if exclusive:
            # A second process creating it at the same moment keeps the first key.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        else:
            os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _from_env(text: str) -> Keyring:
    keys: dict[str, bytes] = {}
    order: list[str] = []
    for i, part in enumerate(p.strip() for p in text.split(",")):
        try:
            key = base64.b64decode(part, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise InvalidInput(
                f"{ENV_VAR}: key {i + 1} is not base64; make one with"
                " `head -c 32 /dev/urandom | base64`"
            ) from exc
        if len(key) != KEY_BYTES:
            raise InvalidInput(
                f"{ENV_VAR}: key {i + 1} is {len(key)} bytes, an AES-256 key is {KEY_BYTES};"
                " make one with `head -c 32 /dev/urandom | base64`"
            )
        keys[key_id(key)] = key
        order.append(key_id(key))
    return Keyring(order[0], keys, None)
