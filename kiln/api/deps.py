"""Request pieces shared by the routes: the app key from the path, who acts."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Query, Request

from kiln.api.access import authenticate
from kiln.api.errors import clip
from kiln.api.peer import peer_of
from kiln.errors import InvalidInput
from kiln.model import AppKey
from kiln.model.access import Principal
from kiln.spec.model import NAME_PATTERN

DEFAULT_ENV = "dev"
PRINCIPAL = "local-token"
"""The name of the home's token (KILN_HOME/token), the first admin token."""

_NAME_HELP = "a lowercase DNS label, e.g. web"


def app_key(
    env: Annotated[str, Path(pattern=NAME_PATTERN, description="environment, e.g. dev")],
    app: Annotated[str, Path(pattern=NAME_PATTERN, description=_NAME_HELP)],
) -> AppKey:
    return AppKey(env, app)


def optional_app_key(
    env: Annotated[
        str | None,
        Query(
            pattern=NAME_PATTERN,
            description=f"environment of `app` (default {DEFAULT_ENV}); "
            "env without app is a 422: events are filtered by one app, not a whole environment",
        ),
    ] = None,
    app: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="only this app's events, e.g. web")
    ] = None,
) -> AppKey | None:
    """One app (its env defaults to dev, as on the CLI) or every event."""
    if app is None:
        if env is not None:
            raise InvalidInput(
                "env alone does not filter events: give app too (env defaults to dev), "
                "or neither for every event"
            )
        return None
    return AppKey(env or DEFAULT_ENV, app)


def actor(
    request: Request,
    principal: Annotated[Principal, Depends(authenticate)],
    x_kiln_actor: Annotated[
        str | None,
        Header(
            max_length=200,
            description="who the caller says it is, e.g. alice@laptop; recorded as a claim "
            "next to the authenticated principal, never instead of it",
        ),
    ] = None,
) -> str:
    """Who acts, as recorded on releases and events.

    The principal is what the server verified: the token's name (``local-token`` for the
    home's) and, on the unix socket, the OS user the kernel names for the connection. The
    header is only a note.
    """
    who = principal.name
    if (peer := peer_of(request.scope)) is not None:
        who += f" uid={peer.uid}({peer.user})"
    claim = "".join(c for c in (x_kiln_actor or "") if c.isprintable()).strip()
    return f"{who}, {claim} (claimed)" if claim else who


def only_known_query_parameters(request: Request) -> None:
    """A query parameter the route does not take is an error, not silently ignored: a typo
    (``?aftr=5``) would otherwise quietly mean something else."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if not request.query_params or not isinstance(path, str):
        return
    known = _query_names(request, path)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        names = ", ".join(repr(clip(name, 40)) for name in unknown[:5])
        takes = ", ".join(sorted(known)) or "none"
        raise InvalidInput(
            f"unknown query parameter{'s' if len(unknown) > 1 else ''} {names}: "
            f"{request.method} {path} takes {takes}"
        )


def _query_names(request: Request, path: str) -> set[str]:
    """The query parameters the OpenAPI document lists for this route (HEAD as GET)."""
    method = "get" if request.method == "HEAD" else request.method.lower()
    cache: dict[tuple[str, str], set[str]] = request.app.state.__dict__.setdefault(
        "kiln_query_names", {}
    )
    if (path, method) not in cache:
        operation = request.app.openapi().get("paths", {}).get(path, {}).get(method, {})
        cache[path, method] = {
            p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"
        }
    return cache[path, method]


Key = Annotated[AppKey, Depends(app_key)]
OptionalKey = Annotated[AppKey | None, Depends(optional_app_key)]
Actor = Annotated[str, Depends(actor)]
