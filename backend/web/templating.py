"""Jinja2 environment for the pages, and the one `render` every web route answers with.

`render` picks fragment or page from the `HX-Request` header (Hypermedia Systems): an htmx
request for a page that has a live partial gets the partial alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from resonfl_server.backend.web.session import CSRF_FIELD, load_session, save_session
from resonfl import __version__

FRONTEND = Path(__file__).resolve().parents[2] / "frontend"
TEMPLATES_DIR = FRONTEND / "templates"
STATIC_DIR = FRONTEND / "static"
HTMX = "vendor/htmx-2.0.11.min.js"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(float(seconds), 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _seconds(seconds: float | None) -> str:
    """A phase's time, to the hundredth below 10 s (most phases of a round are under 1 s)."""
    if seconds is None:
        return "—"
    seconds = max(float(seconds), 0.0)
    return f"{seconds:.2f} s" if seconds < 10 else _duration(seconds)


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    return _duration((datetime.now(UTC) - value).total_seconds()) + " ago"


def _metric(value: Any) -> str:
    if value is None:
        return "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.4g}"


templates.env.filters["duration"] = _duration
templates.env.filters["seconds"] = _seconds
templates.env.filters["when"] = _when
templates.env.filters["ago"] = _ago
templates.env.filters["metric"] = _metric
templates.env.globals["version"] = __version__
templates.env.globals["htmx_path"] = HTMX
templates.env.globals["csrf_field"] = CSRF_FIELD


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    sess = load_session(request)
    ctx = {"request": request, "csrf_token": sess.csrf, "user": None, **(context or {})}
    response = templates.TemplateResponse(
        request, template, ctx, status_code=status_code, headers=headers
    )
    response.headers.setdefault("Cache-Control", "no-store")
    return save_session(request, response)


def redirect(request: Request, url: str, status_code: int = 303) -> Response:
    """A 303 for plain forms; htmx requests get HX-Redirect (a full navigation)."""
    if is_htmx(request):
        response: Response = Response(status_code=204, headers={"HX-Redirect": url})
    else:
        response = RedirectResponse(url, status_code=status_code)
    return save_session(request, response)
