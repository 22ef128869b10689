"""Secrets as the store keeps them: sealed versions, and what may be shown of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kiln.model.app import AppKey


@dataclass(frozen=True, kw_only=True)
class SecretVersion:
    """One version of one secret of one app, without its value: what `kiln secret ls` shows."""

    key: AppKey
    name: str
    version: int
    created_at: datetime
    created_by: str
    key_id: str  # the master key it is sealed under (a fingerprint, not the key)


@dataclass(frozen=True, kw_only=True)
class SealedSecret:
    """A stored version: AES-256-GCM ciphertext (tag appended) and its nonce. The app,
    environment, name, version and key id are the associated data, so a ciphertext copied to
    another row never decrypts."""

    meta: SecretVersion
    nonce: bytes
    ciphertext: bytes

    def __repr__(self) -> str:  # never print bytes someone might mistake for a value
        return f"SealedSecret({self.meta.key}/{self.meta.name} v{self.meta.version})"
