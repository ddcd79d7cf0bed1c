"""Browser sessions: a signed cookie (stdlib HMAC, no server-side session table) holding the
user id and a CSRF token; every POST from a page must echo that token.

The cookie is HttpOnly and SameSite=Lax; the CSRF token is the synchronizer pattern on top
(hidden `csrf_token` field, or the `X-CSRF-Token` header for htmx requests), so a form on
another site cannot post on a signed-in user's behalf, not even the sign-in form itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from resonfl_server.backend.api.deps import SessionDep
from resonfl_server.backend.core.security import verify_password
from resonfl_server.backend.models import User

COOKIE = "resonfl_session"
MAX_AGE_S = 14 * 24 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class LoginRequired(Exception):
    """Raised by `get_web_user`; the web exception handler redirects to /login?next=..."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class CsrfRejected(Exception):
    """A state-changing request without the session's CSRF token (answered with 403)."""


@dataclass
class WebSession:
    user_id: int | None = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    issued: int = field(default_factory=lambda: int(time.time()))
    draft_id: str | None = None
    dirty: bool = False

    def set_draft(self, draft_id: str | None) -> None:
        self.draft_id, self.dirty = draft_id, True

    def sign_in(self, user_id: int) -> None:
        """A new CSRF token on sign-in, so a token seen before sign-in is worthless after."""
        self.user_id, self.csrf, self.issued, self.dirty = (
            user_id,
            secrets.token_urlsafe(24),
            int(time.time()),
            True,
        )

    def sign_out(self) -> None:
        self.user_id, self.csrf, self.draft_id, self.dirty = (
            None,
            secrets.token_urlsafe(24),
            None,
            True,
        )


def _key(request: Request) -> bytes:
    secret = request.app.state.settings.secret_key
    return hashlib.sha256(f"resonfl-web-session:{secret}".encode()).digest()


def _sign(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def encode(key: bytes, data: dict[str, Any]) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode())
    return f"{payload.decode()}.{_sign(key, payload)}"


def decode(key: bytes, value: str) -> dict[str, Any] | None:
    payload, _, signature = value.rpartition(".")
    if not payload or not hmac.compare_digest(_sign(key, payload.encode()), signature):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except ValueError:
        return None
    if not isinstance(data, dict) or time.time() - float(data.get("iat", 0)) > MAX_AGE_S:
        return None
    return data


def load_session(request: Request) -> WebSession:
    """The request's session (read once per request); a fresh one when absent or forged."""
    cached = getattr(request.state, "web_session", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    data = decode(_key(request), request.cookies.get(COOKIE, ""))
    if data is None or not isinstance(data.get("csrf"), str):
        sess = WebSession(dirty=True)
    else:
        uid = data.get("uid")
        draft = data.get("draft")
        sess = WebSession(
            user_id=uid if isinstance(uid, int) else None,
            csrf=data["csrf"],
            issued=data["iat"],
            draft_id=draft if isinstance(draft, str) else None,
        )
    request.state.web_session = sess
    return sess


def _secure(request: Request) -> bool:
    """Secure cookies behind HTTPS: RESONFL_SECURE_COOKIES, else only in production."""
    settings = request.app.state.settings
    if settings.secure_cookies is not None:
        return bool(settings.secure_cookies)
    return bool(settings.environment == "production")


def save_session(request: Request, response: Response) -> Response:
    """Write the cookie when the session is new or changed."""
    sess = load_session(request)
    if sess.dirty:
        value = encode(
            _key(request),
            {"uid": sess.user_id, "csrf": sess.csrf, "iat": sess.issued, "draft": sess.draft_id},
        )
        response.set_cookie(
            COOKIE,
            value,
            max_age=MAX_AGE_S,
            httponly=True,
            samesite="lax",
            secure=_secure(request),
            path="/",
        )
    return response


def get_web_session(request: Request) -> WebSession:
    return load_session(request)


def get_web_user(request: Request, session: SessionDep) -> User:
    sess = load_session(request)
    user = session.get(User, sess.user_id) if sess.user_id is not None else None
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return user


async def check_csrf(request: Request) -> None:
    """Dependency for every state-changing web route."""
    sess = load_session(request)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent:
        raise CsrfRejected("missing CSRF token")
    if not hmac.compare_digest(sent, sess.csrf):
        raise CsrfRejected("CSRF token does not match this session")


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The user with that email and password, or None (same answer for either mistake)."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None or not user.password_hash:
        verify_password(password, "scrypt$00$00")  # similar time whether or not the user exists
        return None
    return user if verify_password(password, user.password_hash) else None


WebSessionDep = Annotated[WebSession, Depends(get_web_session)]
WebUser = Annotated[User, Depends(get_web_user)]
CsrfChecked = Depends(check_csrf)
