"""``SecretVault``: secrets sealed with AES-256-GCM under a master key, over the store.

```
set(key, NAME, value) ── same as the newest version? ── yes ─▶ that version (nothing new)
        │ no
        ▼
 store.add_secret_version ── seal(N+1): nonce (12 random bytes),
                             AES-GCM(master[current], nonce, value,
                                     aad = "kiln-secret-v1" env app NAME N+1 key_id)
reveal(key, NAME, N) ──▶ row ──▶ its key_id in the keyring? ── no ─▶ "wrong master key" error
                                        │ yes
                                        ▼ decrypt with the row's own aad ── tag fails ─▶ "altered
                                          or copied from another secret" error
rotate() ──▶ (file keys) new current key saved next to the old ones
         ──▶ every row not under it: open, seal again, compare-and-swap (one row per transaction)
         ──▶ no row left under an old key ─▶ (file keys) the old keys are dropped from the file
```

A rotation that stops half-way (a crash, a kill) leaves every row readable — each names its
key, and the file keeps every key until no row uses it — and the next ``rotate`` finishes it.
Plaintext exists only in memory here and in the driver; nothing in this module logs a value.
"""

from __future__ import annotations

import hmac
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kiln.errors import InvalidInput, NotFound, PermanentFailure
from kiln.model import AppKey, SealedSecret, SecretVersion
from kiln.spec import MAX_SECRET_BYTES, secret_name_problem
from kiln.store.base import Store
from kiln.store.keyring import ENV_VAR, Keyring, load_keyring, save_keyring

_BATCH = 200


class SecretUnreadable(PermanentFailure):
    """A stored secret that does not decrypt: wrong master key, or altered ciphertext."""


@dataclass(frozen=True, kw_only=True)
class Rotation:
    key_id: str  # the master key every secret is sealed under now
    reencrypted: int
    retired: tuple[str, ...]  # key ids no secret uses any more (dropped from the key file)
    kept_in_env: tuple[str, ...] = ()  # KILN_MASTER_KEY keys no longer needed


def associated_data(key: AppKey, name: str, version: int, key_id: str) -> bytes:
    return "\0".join(
        ("kiln-secret-v1", key.environment, key.app, name, str(version), key_id)
    ).encode()


class SecretVault:
    def __init__(
        self, store: Store, keyring: Keyring | None = None, *, home: Path | None = None
    ) -> None:
        """``keyring``, or the keys of ``home`` (read, or made, on first use: a kiln that never
        stores a secret never makes a master key)."""
        if keyring is None and home is None:
            raise ValueError("a SecretVault needs a keyring or a home to load one from")
        self._store = store
        self._loaded = keyring
        self._home = home
        # Rotation and sealing take turns: a version sealed during a rotation is sealed under
        # whichever key is current at that moment, and the rotation's loop catches it.
        self._lock = threading.RLock()

    @property
    def _ring(self) -> Keyring:
        with self._lock:
            if self._loaded is None:
                assert self._home is not None
                self._loaded = load_keyring(self._home)
            return self._loaded

    @_ring.setter
    def _ring(self, ring: Keyring) -> None:
        self._loaded = ring

    @property
    def current_key_id(self) -> str:
        return self._ring.current

    # --- writes ---------------------------------------------------------------------------

    def set(
        self, key: AppKey, name: str, value: bytes, *, who: str, now: datetime
    ) -> tuple[SecretVersion, bool]:
        """A new version unless ``value`` equals the newest one; (version, made a new one)."""
        if problem := secret_name_problem(name):
            raise InvalidInput(problem)
        if not value:
            raise InvalidInput(f"secret {name}: the value is empty; give one on stdin or a file")
        if len(value) > MAX_SECRET_BYTES:
            raise InvalidInput(
                f"secret {name}: a value is at most {MAX_SECRET_BYTES // 1024} KiB,"
                f" got {len(value)} bytes"
            )
        with self._lock:
            versions = self._store.secret_versions(key, name)
            if versions:
                newest = versions[-1]
                if hmac.compare_digest(self.reveal(key, name, newest.version), value):
                    return newest, False
            ring = self._ring

            def seal(version: int) -> tuple[str, bytes, bytes]:
                return self._seal(ring, key, name, version, value)

            made = self._store.add_secret_version(key, name, seal=seal, created_by=who, now=now)
            return made, True

    def remove(self, key: AppKey, name: str) -> int:
        with self._lock:
            return self._store.delete_secret(key, name)

    # --- reads ----------------------------------------------------------------------------

    def versions(self, key: AppKey, name: str | None = None) -> list[SecretVersion]:
        return self._store.secret_versions(key, name)

    def newest(self, key: AppKey) -> dict[str, int]:
        newest: dict[str, int] = {}
        for v in self._store.secret_versions(key):
            newest[v.name] = max(newest.get(v.name, 0), v.version)
        return newest

    def reveal(self, key: AppKey, name: str, version: int) -> bytes:
        """The plaintext of one version, for the driver at an instance's start."""
        if version < 1:
            raise NotFound(
                f"the release of {key} pins no version of secret {name}: deploy again once"
                f" `kiln secret set {key} {name}` has set it"
            )
        return self._open(self._store.sealed_secret(key, name, version))

    # --- rotation -------------------------------------------------------------------------

    def rotate(self) -> Rotation:
        with self._lock:
            ring = self._ring
            if ring.path is not None:
                ring = ring.with_new_current()
                save_keyring(ring)  # the new key is durable before anything is sealed with it
                self._ring = ring
            count = 0
            while batch := self._store.sealed_secrets_not_under(ring.current, limit=_BATCH):
                for old in batch:
                    plaintext = self._open(old)
                    _, nonce, ciphertext = self._seal(
                        ring, old.meta.key, old.meta.name, old.meta.version, plaintext
                    )
                    if self._store.reseal_secret(
                        old, key_id=ring.current, nonce=nonce, ciphertext=ciphertext
                    ):
                        count += 1
            unused = set(ring.keys) - {ring.current} - self._store.secret_key_ids()
            if ring.path is not None:
                ring = ring.without(unused)
                save_keyring(ring)
                self._ring = ring
                return Rotation(
                    key_id=ring.current, reencrypted=count, retired=tuple(sorted(unused))
                )
            return Rotation(
                key_id=ring.current,
                reencrypted=count,
                retired=(),
                kept_in_env=tuple(sorted(unused)),
            )

    # --- crypto ---------------------------------------------------------------------------

    @staticmethod
    def _seal(
        ring: Keyring, key: AppKey, name: str, version: int, value: bytes
    ) -> tuple[str, bytes, bytes]:
        master = ring.keys[ring.current]
        nonce = os.urandom(12)
        aad = associated_data(key, name, version, ring.current)
        return ring.current, nonce, AESGCM(master).encrypt(nonce, value, aad)

    def _open(self, sealed: SealedSecret) -> bytes:
        meta = sealed.meta
        what = f"secret {meta.name} version {meta.version} of {meta.key}"
        master = self._ring.key(meta.key_id)
        if master is None:
            raise SecretUnreadable(
                f"{what} is sealed under master key {meta.key_id}, which this kiln does not have"
                f" (it has {', '.join(sorted(self._ring.keys))}): the master key is wrong —"
                f" restore $KILN_HOME/master.key or set {ENV_VAR} to the key kiln used"
            )
        aad = associated_data(meta.key, meta.name, meta.version, meta.key_id)
        try:
            return AESGCM(master).decrypt(sealed.nonce, sealed.ciphertext, aad)
        except InvalidTag as exc:
            raise SecretUnreadable(
                f"{what} does not decrypt under its master key {meta.key_id}: its stored"
                " ciphertext was altered or copied from another secret. Set it again with"
                f" `kiln secret set {meta.key} {meta.name}` (and deploy)"
            ) from exc
