"""Who may do what: API tokens with roles, and the audit log's entries. Pure: no I/O.

    role       grants                                  environments
    viewer     READ                                    every one, or the token's list
    deployer   READ DEPLOY APPROVE SECRETS             every one, or the token's list
    admin      everything, ADMIN included              every one (an admin is never scoped)

A permission is asked for in one environment (the app's) or in none (kiln-wide: tokens, the
audit log, shutdown; or a list a route filters itself). A token limited to environments holds
its permissions only there; a kiln-wide ADMIN permission needs an admin token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Permission(StrEnum):
    READ = "read"
    """Status, releases, rollouts, events, logs, the spec schema, the OpenAPI document."""
    DEPLOY = "deploy"
    """Deploy, rollback, scale, stop, destroy; steer a rollout (promote, pause, abort ...)."""
    APPROVE = "approve"
    """Approve a promotion into an environment (the target environment is checked)."""
    SECRETS = "secrets"
    """Read secret names and versions, set and remove secrets (never values back)."""
    ADMIN = "admin"
    """Tokens, the audit log, shutting the server down."""


class Role(StrEnum):
    VIEWER = "viewer"
    DEPLOYER = "deployer"
    ADMIN = "admin"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.DEPLOYER: frozenset(
        {Permission.READ, Permission.DEPLOY, Permission.APPROVE, Permission.SECRETS}
    ),
    Role.ADMIN: frozenset(Permission),
}


@dataclass(frozen=True, kw_only=True)
class Principal:
    """Who a request's token says it is: the token's name, role and environments."""

    name: str
    role: Role
    environments: frozenset[str] = frozenset()  # empty: every environment

    def may(self, permission: Permission, environment: str | None = None) -> bool:
        """Whether this token holds ``permission`` in ``environment`` (None: kiln-wide)."""
        if permission not in ROLE_PERMISSIONS[self.role]:
            return False
        if permission is Permission.ADMIN:
            return self.role is Role.ADMIN and not self.environments
        if environment is None or not self.environments:
            return True
        return environment in self.environments

    def sees(self, environment: str | None) -> bool:
        """Whether a listing shows this environment's apps and events to the token (kiln's
        own events, with no environment, are shown to every token)."""
        return environment is None or not self.environments or environment in self.environments

    @property
    def scope(self) -> str:
        return ",".join(sorted(self.environments)) if self.environments else "every environment"


@dataclass(frozen=True, kw_only=True)
class TokenRecord:
    """A stored token: never the token itself, only what is derived from it."""

    name: str
    role: Role
    environments: frozenset[str]
    token_id: str  # token_id(token): sent by a client to /v1/identify, names no secret
    token_hash: str  # token_hash(token): what a bearer token is checked against
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    @property
    def principal(self) -> Principal:
        return Principal(name=self.name, role=self.role, environments=self.environments)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, kw_only=True)
class NewAuditEntry:
    """One API call that changed something or was refused."""

    token: str | None  # the token's name; None: no token, or one kiln does not know
    peer: str  # where from: uid=1000(ann) on the unix socket, tcp 127.0.0.1:51234
    claimed: str  # the client's X-Kiln-Actor, a claim only ('' if none)
    method: str
    path: str
    environment: str | None
    app: str | None
    status: int
    outcome: str  # ok | refused | failed
    release: int | None = None
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class AuditEntry(NewAuditEntry):
    id: int
    at: datetime
