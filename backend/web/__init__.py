"""The browser side: server-rendered pages (Jinja2 + htmx) over the same services as the API.

`mount_web(app)` adds the HTML routes, /static and the handlers that turn "not signed in"
into a redirect to /login and a missing CSRF token into a 403 page.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from resonfl_server.backend.web.session import CsrfRejected, LoginRequired
from resonfl_server.backend.web.templating import STATIC_DIR, redirect, render


def mount_web(app: FastAPI) -> None:
    from resonfl_server.backend.web.routes import (
        auth,
        compare,
        jobs,
        sites,
        wizard,
    )  # cycle: routes import us

    for module in (auth, wizard, jobs, sites, compare):  # wizard first: /jobs/new before /jobs/{id}
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(CsrfRejected, _csrf_rejected)


async def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return redirect(request, f"/login?next={quote(exc.next_url, safe='/')}")


async def _csrf_rejected(request: Request, exc: Exception) -> Response:
    context = {"title": "Request refused", "message": f"{exc} — reload the page and try again."}
    return render(request, "pages/error.html", context, status_code=403)
