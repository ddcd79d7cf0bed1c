"""Sign in and sign out (session cookie; the sign-in form is CSRF-protected too)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from resonfl_server.backend.api.deps import SessionDep
from resonfl_server.backend.services import accounts
from resonfl_server.backend.web.session import CsrfChecked, authenticate, load_session
from resonfl_server.backend.web.templating import redirect, render

router = APIRouter(tags=["web"], include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: `//evil.example` or `https://...` fall back to the jobs list."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/jobs"


@router.get("/login")
def read_login(request: Request, next: str | None = None) -> Response:
    return render(request, "pages/login.html", {"next": _safe_next(next), "email": ""})


@router.post("/login", dependencies=[CsrfChecked])
def login(
    request: Request,
    session: SessionDep,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/jobs",
    token: Annotated[str, Form()] = "",
) -> Response:
    """Email and password, or an API token (`resonfl up` prints the admin's)."""
    user = authenticate(session, email, password) if email and password else None
    if token and user is None:
        user = accounts.user_for_token(session, token.strip())
    if user is None:
        error = "That API token is not valid." if token else "Wrong email or password."
        context = {"next": _safe_next(next), "email": email, "error": error}
        return render(request, "pages/login.html", context, status_code=400)
    load_session(request).sign_in(user.id)
    return redirect(request, _safe_next(next))


@router.post("/logout", dependencies=[CsrfChecked])
def logout(request: Request) -> Response:
    load_session(request).sign_out()
    return redirect(request, "/login")


@router.get("/")
def read_home(request: Request) -> Response:
    return redirect(request, "/jobs" if load_session(request).user_id else "/login")
