"""The dashboard's routes, all under ``/ui``: pages, their live data, the event stream, actions.

    GET  /ui/login, POST /ui/login      the token form; sets the session cookie (session.py)
    POST /ui/logout                     (CSRF) forget the cookie
    GET  /ui/                           overview: environments x apps
    GET  /ui/apps/{env}/{app}           an app: releases, rollout, instances, charts, logs, events
    GET  /ui/data/overview              the overview's table as HTML, for live updates
    GET  /ui/data/apps/{env}/{app}      the app page's sections as HTML + the last event id
    GET  /ui/data/apps/{env}/{app}/series   per-release rate / error rate / p95 (series.py)
    GET  /ui/data/apps/{env}/{app}/logs     the log tail (JSON lines)
    GET  /ui/events                     Server-Sent Events, as /v1/events/stream (cookie auth)
    POST /ui/actions/{env}/{app}/{action}   (CSRF) promote, pause, resume, abort, retry,
                                        rollback, scale: the same Service calls as the API, so
                                        the same refusals with the same messages
    GET  /ui/static/{name}              the page's CSS and JS, and uPlot from node_modules

A page without a valid session redirects to the login form; data, stream and action routes
answer 401 in the API's error shape. Every POST needs the session's CSRF token.
"""

# No `from __future__ import annotations` here: the routes' parameter types name dependencies
# built inside ui_router (they need its `authenticate`), which FastAPI can only see evaluated.

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

import jinja2
from fastapi import APIRouter, Body, Cookie, Depends, FastAPI, Header, Query, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field

from kiln.api.access import (
    PRINCIPAL_STATE,
    TOKEN_NAME_STATE,
    check_every_route_declares_a_permission,
    public,
    requires,
)
from kiln.api.access import authenticate as access_authenticate
from kiln.api.deps import Key, OptionalKey, only_known_query_parameters
from kiln.api.errors import error_body, install_error_handlers, kiln_error_response
from kiln.api.routes_streams import Kinds, resume_point
from kiln.api.schemas import MAX_ID, event_out, log_line_out
from kiln.api.ui.sampler import TrafficSampler
from kiln.api.ui.series import TrafficHistory
from kiln.api.ui.session import (
    COOKIE,
    COOKIE_PATH,
    CSRF_FIELD,
    CSRF_HEADER,
    MAX_TOKEN_CHARS,
    Session,
    new_session,
    session_from_cookie,
)
from kiln.api.ui.views import app_page_context, overview_context
from kiln.config import token_hash
from kiln.controller.service import Service
from kiln.controller.views import AppStatus
from kiln.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from kiln.model.access import Permission, Principal
from kiln.store.aio import AsyncAccessStore

HERE = Path(__file__).parent
NODE_MODULES = HERE / "node_modules"
# Every file the dashboard serves, by name: nothing else on disk is reachable through /ui.
STATIC_FILES = {
    "kiln.css": HERE / "static" / "kiln.css",
    "dashboard.js": HERE / "static" / "dashboard.js",
    "uPlot.iife.min.js": NODE_MODULES / "uplot" / "dist" / "uPlot.iife.min.js",
    "uPlot.min.css": NODE_MODULES / "uplot" / "dist" / "uPlot.min.css",
}
PAGES = frozenset({"/", "/apps/{env}/{app}"})
"""Routes that answer HTML: a refusal there is a page (or the sign-in form), not JSON."""
FORM_TYPE = "application/x-www-form-urlencoded"
_MEDIA_TYPES = {".css": "text/css", ".js": "text/javascript"}

Authenticate = Callable[[str], Awaitable[Principal | None]]
"""Who holds this token (an active one), or None: the API's own check (``access_authenticator``)."""

ACTIONS = ("promote", "pause", "resume", "abort", "retry", "rollback", "scale")
Action = Literal["promote", "pause", "resume", "abort", "retry", "rollback", "scale"]


class ActionRequest(BaseModel):
    full: bool = Field(default=False, description="promote: all traffic now")
    to: int | None = Field(default=None, ge=1, le=MAX_ID, description="rollback: this release")
    instances: int | None = Field(default=None, ge=0, le=100, description="scale: instances")
    message: str = Field(default="", max_length=500, description="rollback: why")


class UiUser:
    """The holder of the session: the principal its token names, and the session itself."""

    def __init__(self, principal: Principal, session: Session) -> None:
        self.principal = principal
        self.name = principal.name
        self.role = principal.role.value
        self.session = session

    def can_act(self, environment: str) -> bool:
        """What the action routes check (``requires(Permission.DEPLOY)``), to grey out the
        buttons of a token that may only look; the server refuses such an action anyway."""
        return self.principal.may(Permission.DEPLOY, environment)

    @property
    def actor(self) -> str:
        return f"{self.name} (dashboard)"


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(("html",)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ago"] = _ago
    env.filters["when"] = lambda at: at.strftime("%Y-%m-%d %H:%M:%S UTC") if at else ""
    env.filters["pct"] = lambda value: "—" if value is None else f"{value * 100:.1f}%"
    return env


def _ago(at: datetime | None) -> str:
    if at is None:
        return "—"
    seconds = max(0, int((datetime.now(UTC) - at).total_seconds()))
    if seconds < 90:
        return f"{seconds}s"
    if seconds < 90 * 60:
        return f"{seconds // 60}m"
    if seconds < 36 * 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d"


def _forbidden(message: str) -> JSONResponse:
    return JSONResponse(
        status_code=403, content={"error": {"type": "forbidden", "message": message}}
    )


def access_authenticator(store: AsyncAccessStore) -> Authenticate:
    """The API's token check for the dashboard: the principal of an active token, from the
    store on every request (a revoked token's sessions end at once)."""

    async def check(presented: str) -> Principal | None:
        record = await store.token_by_hash(token_hash(presented))
        return record.principal if record is not None and record.active else None

    return check


def create_ui_app(service: Service, *, authenticate: Authenticate) -> FastAPI:
    """The dashboard as its own app, mounted at ``/ui`` by ``kiln.api.create_app``: its routes
    stay out of the API's OpenAPI document (and its fuzzing), while errors keep the API's
    shape and unknown query parameters are refused as on the API.

    Every route declares its permission as the API's do (``requires(Permission.…)`` /
    ``public()``, kiln.api.access), checked against the session cookie's token instead of the
    bearer header: this app overrides ``kiln.api.access.authenticate``, so the rules, the roles
    and the refusals' words are the API's own. A viewer sees every page and cannot act."""
    ui = FastAPI(
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(only_known_query_parameters)],
    )
    install_error_handlers(ui)

    async def session_principal(
        request: Request,
        kiln_ui: Annotated[str | None, Cookie(max_length=MAX_TOKEN_CHARS + 64)] = None,
    ) -> Principal:
        session = session_from_cookie(kiln_ui)
        if session is None:
            raise Unauthorized("not signed in to the dashboard: open /ui/login")
        principal = await authenticate(session.token)
        if principal is None:
            raise Unauthorized(
                "the dashboard session's token is unknown or revoked: sign in again at /ui/login"
            )
        setattr(request.state, TOKEN_NAME_STATE, principal.name)
        setattr(request.state, PRINCIPAL_STATE, principal)
        return principal

    ui.dependency_overrides[access_authenticate] = session_principal
    ui.add_exception_handler(Unauthorized, _on_refused_page)
    ui.include_router(ui_router(service, authenticate=authenticate))
    check_every_route_declares_a_permission(ui)
    return ui


async def _on_refused_page(request: Request, exc: Exception) -> Response:
    """A browser opening a page without a session goes to the sign-in form; a page its token
    may not see says so. Data, stream and action routes answer the API's JSON error."""
    assert isinstance(exc, Unauthorized)
    route = getattr(request.scope.get("route"), "path", None)
    wants_page = request.method == "GET" and route in PAGES
    if not wants_page:
        return kiln_error_response(exc)
    if not isinstance(exc, Forbidden):
        return RedirectResponse(f"{COOKIE_PATH}/login", status_code=303)
    html = (
        _templates().get_template("missing.html").render(title="Not allowed", message=exc.message)
    )
    return HTMLResponse(html, status_code=403)


def ui_router(service: Service, *, authenticate: Authenticate) -> APIRouter:
    """The dashboard's routes, relative to where it is mounted (``/ui``)."""
    router = APIRouter()
    templates = _templates()
    history = TrafficHistory()
    sampler = TrafficSampler(service, history)

    async def current_user(
        kiln_ui: Annotated[str | None, Cookie(max_length=MAX_TOKEN_CHARS + 64)] = None,
    ) -> UiUser | None:
        session = session_from_cookie(kiln_ui)
        if session is None:
            return None
        principal = await authenticate(session.token)
        return UiUser(principal, session) if principal is not None else None

    MaybeUser = Annotated[UiUser | None, Depends(current_user)]

    async def signed_in(
        principal: Annotated[Principal, Depends(access_authenticate)],
        kiln_ui: Annotated[str | None, Cookie(max_length=MAX_TOKEN_CHARS + 64)] = None,
    ) -> UiUser:
        # The route's rule ran first (same cached principal): the cookie is a session.
        session = session_from_cookie(kiln_ui)
        if session is None:
            raise Unauthorized("not signed in to the dashboard: open /ui/login")
        return UiUser(principal, session)

    User = Annotated[UiUser, Depends(signed_in)]
    READ = [requires(Permission.READ)]
    DEPLOY = [requires(Permission.DEPLOY)]
    PUBLIC = [public()]

    def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = templates.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status_code)

    def visible(user: UiUser, statuses: list[AppStatus]) -> list[AppStatus]:
        return [s for s in statuses if user.principal.sees(s.key.environment)]

    async def sample() -> None:
        sampler.watched()
        await sampler.sample_now()

    # --- signing in ----------------------------------------------------------------------

    @router.get("/login", dependencies=PUBLIC)
    async def login_form(user: MaybeUser) -> Response:
        if user is not None:
            return RedirectResponse(f"{COOKIE_PATH}/", status_code=303)
        return page("login.html", error="")

    @router.post("/login", dependencies=PUBLIC)
    async def login(request: Request) -> Response:
        token = (await _form_field(request, "token")).strip()
        if not token or await authenticate(token) is None:
            return page(
                "login.html",
                status_code=401,
                error="That is not a token this kiln knows. The home's token is in "
                "KILN_HOME/token (`cat ~/.kiln/token`).",
            )
        session = new_session(token)
        response = RedirectResponse(f"{COOKIE_PATH}/", status_code=303)
        response.set_cookie(
            COOKIE,
            session.cookie_value(),
            httponly=True,
            samesite="strict",
            path=COOKIE_PATH,
        )
        return response

    @router.post("/logout", dependencies=READ)
    async def logout(request: Request, user: User) -> Response:
        if not user.session.csrf_matches(await _form_field(request, CSRF_FIELD)):
            return _forbidden("sign-out refused: the form lacks this session's CSRF token")
        response = RedirectResponse(f"{COOKIE_PATH}/login", status_code=303)
        response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
        return response

    # --- pages ---------------------------------------------------------------------------

    @router.get("/", dependencies=READ)
    async def overview(user: User) -> Response:
        statuses = visible(user, await service.list_status())
        await sample()
        return page(
            "overview.html",
            user=user,
            **overview_context(statuses, history),
        )

    @router.get("/apps/{env}/{app}", dependencies=READ)
    async def app_page(key: Key, user: User) -> Response:
        try:
            context = await app_page_context(service, key, sampler.usage)
        except NotFound as exc:
            return page("missing.html", status_code=404, user=user, message=exc.message)
        await sample()
        return page("app.html", user=user, **context)

    # --- live data -----------------------------------------------------------------------

    @router.get("/data/overview", dependencies=READ)
    async def overview_data(user: User) -> dict[str, Any]:
        statuses = visible(user, await service.list_status())
        await sample()
        context = overview_context(statuses, history)
        return {"html": {"apps": templates.get_template("_overview.html").render(**context)}}

    @router.get("/data/apps/{env}/{app}", dependencies=READ)
    async def app_data(key: Key, user: User) -> dict[str, Any]:
        context = await app_page_context(service, key, sampler.usage)
        module = templates.get_template("_app.html").make_module(context)
        sections = ("summary", "rollout", "releases", "instances", "events")
        return {
            "html": {name: str(getattr(module, f"{name}_section")()) for name in sections},
            "last_event_id": context["last_event_id"],
            "rollout_active": context["rollout"].active,
        }

    @router.get("/data/apps/{env}/{app}/series", dependencies=READ)
    async def app_series(key: Key, user: User) -> dict[str, Any]:
        await service.status(key)  # NotFound for an unknown app
        await sample()
        return history.series(key).as_json()

    @router.get("/data/apps/{env}/{app}/logs", dependencies=READ)
    async def app_logs(
        key: Key,
        user: User,
        tail: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        await service.status(key)
        lines = [
            log_line_out(line).model_dump(mode="json")
            async for line in service.logs(key, instance=None, follow=False, tail=tail)
        ]
        return {"lines": lines[-tail:]}

    @router.get("/events", response_class=EventSourceResponse, dependencies=READ)
    async def events(
        user: User,
        key: OptionalKey,
        kinds: Kinds,
        start: Annotated[int, Depends(resume_point)],
    ) -> AsyncIterator[ServerSentEvent]:
        try:
            async for event in service.follow_events(key=key, after_id=start, kinds=kinds):
                if user.principal.sees(event.key.environment if event.key else None):
                    yield ServerSentEvent(id=str(event.id), data=event_out(event))
        except Exception as exc:
            yield ServerSentEvent(event="error", data=error_body(exc))

    # --- actions -------------------------------------------------------------------------

    @router.post("/actions/{env}/{app}/{action}", dependencies=DEPLOY)
    async def act(
        key: Key,
        action: Action,
        user: User,
        body: Annotated[ActionRequest | None, Body()] = None,
        x_kiln_csrf: Annotated[str | None, Header(max_length=200)] = None,
    ) -> Response:
        if not user.session.csrf_matches(x_kiln_csrf):
            return _forbidden(
                f"{action} refused: the request lacks this session's CSRF token "
                f"({CSRF_HEADER} header); reload the dashboard and try again"
            )
        request = body or ActionRequest()
        who = user.actor
        message = f"{action} done"
        if action == "promote":
            view = await service.promote(key, full=request.full, who=who)
            message = view.status
        elif action == "pause":
            message = (await service.pause(key, who=who)).status
        elif action == "resume":
            message = (await service.resume(key, who=who)).status
        elif action == "abort":
            message = (await service.abort(key, who=who)).status
        elif action == "retry":
            message = (await service.retry(key, who=who)).status
        elif action == "rollback":
            result = await service.rollback(
                key,
                to=request.to,
                message=request.message or "rollback from the dashboard",
                who=who,
            )
            message = result.message or f"rolling back: release {result.release.number}"
        else:
            if request.instances is None:
                raise InvalidInput("scale needs instances: a number from 0 to 100")
            status = await service.scale(key, request.instances, who=who)
            message = f"scaling to {status.scale} instances"
        return JSONResponse({"ok": True, "message": message})

    # --- static files --------------------------------------------------------------------

    @router.get("/static/{name}", dependencies=PUBLIC)
    async def static(name: str) -> Response:
        path = STATIC_FILES.get(name)
        if path is None or not path.is_file():
            hint = (
                " (run scripts/bootstrap.sh: it installs uPlot with npm)" if "uPlot" in name else ""
            )
            raise NotFound(f"no dashboard file {name[:60]!r}{hint}")
        return FileResponse(
            path,
            media_type=_MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
            headers={"Cache-Control": "no-cache"},
        )

    return router


async def _form_field(request: Request, name: str) -> str:
    """One field of a urlencoded form (the sign-in and sign-out forms; nothing else posts
    forms, so the standard library's parser is enough and python-multipart is not needed)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != FORM_TYPE:
        raise InvalidInput(f"send the form as {FORM_TYPE}")
    body = (await request.body())[: MAX_TOKEN_CHARS * 4].decode("utf-8", "replace")
    values = parse_qs(body, max_num_fields=4).get(name, [""])
    return values[0][:MAX_TOKEN_CHARS]
