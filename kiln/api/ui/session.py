"""The dashboard's session: the API token in a cookie, and a CSRF token derived from it.

    login form (token) ─▶ check as the API does ─▶ Set-Cookie: kiln_ui=<session id>.<token>
                                                    HttpOnly; SameSite=Strict; Path=/ui
    page  ─▶ <meta name="kiln-csrf" content=HMAC(token, "kiln-ui-csrf-v1:" + session id)>
    POST  ─▶ X-Kiln-CSRF (or form field csrf) must equal the HMAC of the cookie's session

The cookie holds the token itself, so a revoked or changed token ends every session at once
and a restart of kiln keeps them (nothing to store). HttpOnly keeps it from page scripts;
SameSite=Strict keeps other sites' pages from sending it. The CSRF token is one more lock a
forged request cannot open: it is in the page only, never in a cookie, and each login gets a
new session id, so a CSRF token from an old session does not fit a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

COOKIE = "kiln_ui"
CSRF_HEADER = "X-Kiln-CSRF"
CSRF_FIELD = "csrf"
COOKIE_PATH = "/ui"
MAX_TOKEN_CHARS = 512


@dataclass(frozen=True)
class Session:
    session_id: str
    token: str

    @property
    def csrf(self) -> str:
        return csrf_token(self.token, self.session_id)

    def cookie_value(self) -> str:
        return f"{self.session_id}.{self.token}"

    def csrf_matches(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


def new_session(token: str) -> Session:
    return Session(session_id=secrets.token_urlsafe(16), token=token)


def session_from_cookie(value: str | None) -> Session | None:
    """The session a cookie names (not yet checked against the tokens), None if malformed."""
    if not value or len(value) > MAX_TOKEN_CHARS + 64:
        return None
    session_id, dot, token = value.partition(".")
    if not dot or not session_id or not token:
        return None
    return Session(session_id=session_id, token=token)


def csrf_token(token: str, session_id: str) -> str:
    return hmac.new(
        token.encode(), f"kiln-ui-csrf-v1:{session_id}".encode(), hashlib.sha256
    ).hexdigest()
