"""Who may call which route: every route declares the one permission it needs.

    @router.post("/apps/{env}/{app}/scale", dependencies=[requires(Permission.DEPLOY)])
    @router.get("/healthz", dependencies=[public()])          # no token at all (rare)

    # the environment is not in the path (it is in the body): take the grant and ask
    async def deploy(body: ..., grant: Annotated[Grant, requires(Permission.DEPLOY)]):
        grant.require(spec.environment)

``requires(permission)`` authenticates the bearer token (``authenticate``: looked up by its
hash on every request, so a revoked token stops working at once) and checks that the token's
role grants ``permission`` — in the path's ``{env}`` when the route has one. A token limited
to environments that calls a route without ``{env}`` passes the check; such a route narrows
by itself: ``grant.require(env)`` before acting in an environment, ``grant.sees(env)`` to
filter a listing. ``create_app`` refuses to build an app with a route that declares no rule
(``check_every_route_declares_a_permission``), and ``tests/api/test_access_table.py`` asks
every route with every role.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kiln.config import token_hash
from kiln.errors import Forbidden, Unauthorized
from kiln.model.access import Permission, Principal
from kiln.store.aio import AsyncAccessStore

ACCESS_STATE = "kiln_access"
"""``app.state`` attribute that holds the ``AsyncAccessStore``."""
PRINCIPAL_STATE = "kiln_principal"
"""``request.state`` attribute: the ``Principal`` once the token was accepted."""
TOKEN_NAME_STATE = "kiln_token_name"
"""``request.state`` attribute: the name of the token presented, even a revoked one (audit)."""

_bearer = HTTPBearer(
    auto_error=False,
    description="an API token: the home's KILN_HOME/token (admin), or one from `kiln token create`",
)


def access_store(app: FastAPI) -> AsyncAccessStore:
    store: AsyncAccessStore = getattr(app.state, ACCESS_STATE)
    return store


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The principal of the request's bearer token; ``Unauthorized`` for none, an unknown or
    a revoked one. Asked once per request (FastAPI caches it), from the store every time."""
    if credentials is None:
        raise Unauthorized(
            "missing API token: send 'Authorization: Bearer <token>' "
            "(the home's token is in KILN_HOME/token)"
        )
    record = await access_store(request.app).token_by_hash(token_hash(credentials.credentials))
    if record is None:
        raise Unauthorized("wrong API token")
    setattr(request.state, TOKEN_NAME_STATE, record.name)
    if record.revoked_at is not None:
        raise Unauthorized(
            f"the token {record.name!r} was revoked at {record.revoked_at:%Y-%m-%d %H:%M} UTC; "
            "ask an admin for a new one (`kiln token create`)"
        )
    principal = record.principal
    setattr(request.state, PRINCIPAL_STATE, principal)
    return principal


@dataclass(frozen=True)
class Grant:
    """What a route's rule let through: the principal and the permission it was checked for."""

    principal: Principal
    permission: Permission

    def require(self, environment: str, permission: Permission | None = None) -> None:
        """``Forbidden`` unless the token holds the permission (default: the route's) in
        ``environment`` — for an environment the path does not name (a spec's, a target's)."""
        require(self.principal, permission or self.permission, environment)

    def sees(self, environment: str | None) -> bool:
        """Whether a listing shows this environment to the token."""
        return self.principal.sees(environment)


def require(principal: Principal, permission: Permission, environment: str | None) -> None:
    if principal.may(permission, environment):
        return
    where = f" in {environment}" if environment is not None else ""
    raise Forbidden(
        f"the token {principal.name!r} ({principal.role.value} for {principal.scope}) may "
        f"not {permission.value}{where}; ask an admin for a token that may "
        "(`kiln token create NAME --role ... --env ...`)"
    )


class PermissionRule:
    """The dependency ``requires(permission)`` adds to a route."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(
        self, request: Request, principal: Annotated[Principal, Depends(authenticate)]
    ) -> Grant:
        env = request.path_params.get("env")
        require(principal, self.permission, env if isinstance(env, str) else None)
        return Grant(principal, self.permission)

    def __repr__(self) -> str:
        return f"requires({self.permission})"


class PublicRule:
    """The dependency ``public()`` adds: the route needs no token (is kiln up, who is it)."""

    async def __call__(self) -> None:
        return None

    def __repr__(self) -> str:
        return "public()"


_PUBLIC = PublicRule()


def requires(permission: Permission) -> Any:
    """The route needs a token that holds ``permission`` (in the path's ``{env}``, if any).
    Use in ``dependencies=[...]``, or as ``Annotated[Grant, requires(...)]`` for the grant."""
    return Depends(PermissionRule(permission))


def public() -> Any:
    """The route needs no token. Only for what a client asks before it trusts the server."""
    return Depends(_PUBLIC)


def api_routes(app: FastAPI) -> list[Any]:
    """Every API route of ``app`` as served, with its path, methods and dependant (those of
    the routers it was included through, too). FastAPI keeps included routers lazily, so
    ``app.routes`` alone would not list them."""
    return [
        context
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
    ]


def rules_of(route: Any) -> list[PermissionRule | PublicRule]:
    """Every rule the route declares, however deep in its dependencies."""
    found: list[PermissionRule | PublicRule] = []

    def walk(dependant: Dependant) -> None:
        for sub in dependant.dependencies:
            if isinstance(sub.call, PermissionRule | PublicRule):
                found.append(sub.call)
            walk(sub)

    walk(route.dependant)
    return found


def rule_of(route: Any) -> Permission | None:
    """The permission a route needs (None: public). ``RuntimeError`` for a route without
    exactly one rule."""
    rules = rules_of(route)
    if len(rules) != 1:
        methods = ",".join(sorted(route.methods or ()))
        what = "declares no permission" if not rules else f"declares {len(rules)} rules"
        raise RuntimeError(
            f"the API route {methods} {route.path} {what}: give it exactly one, "
            "dependencies=[requires(Permission.…)] or [public()] (kiln.api.access)"
        )
    rule = rules[0]
    return rule.permission if isinstance(rule, PermissionRule) else None


def check_every_route_declares_a_permission(app: FastAPI) -> None:
    for route in api_routes(app):
        rule_of(route)


def is_public(route: object) -> bool:
    dependant = getattr(route, "dependant", None)
    return isinstance(dependant, Dependant) and any(
        isinstance(r, PublicRule) for r in rules_of(route)
    )


Read = Annotated[Grant, requires(Permission.READ)]
"""A route parameter for a listing that filters by ``grant.sees(env)``."""
