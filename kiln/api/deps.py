"""Request pieces shared by the routes: the app key from the path, the actor header."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Query

from kiln.errors import InvalidInput
from kiln.model import AppKey
from kiln.spec.model import NAME_PATTERN

_NAME_HELP = "a lowercase DNS label, e.g. web"


def app_key(
    env: Annotated[str, Path(pattern=NAME_PATTERN, description="environment, e.g. dev")],
    app: Annotated[str, Path(pattern=NAME_PATTERN, description=_NAME_HELP)],
) -> AppKey:
    return AppKey(env, app)


def optional_app_key(
    env: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="environment; give it with app")
    ] = None,
    app: Annotated[str | None, Query(pattern=NAME_PATTERN, description=_NAME_HELP)] = None,
) -> AppKey | None:
    """Both or neither: the Service filters by one app, not by a whole environment."""
    if env is None and app is None:
        return None
    if env is None or app is None:
        raise InvalidInput("give both env and app to filter events by app, or neither for all")
    return AppKey(env, app)


def actor(
    x_kiln_actor: Annotated[
        str | None, Header(max_length=200, description="who asks, e.g. alice@laptop")
    ] = None,
) -> str:
    return (x_kiln_actor or "").strip() or "api"


Key = Annotated[AppKey, Depends(app_key)]
OptionalKey = Annotated[AppKey | None, Depends(optional_app_key)]
Actor = Annotated[str, Depends(actor)]
