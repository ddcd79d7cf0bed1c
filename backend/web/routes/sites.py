"""Sites: every registered site, its GPUs, last heartbeat and running job; admins register a
site here and see its token once (it is never stored, only its hash)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from resonfl_server.backend.api.deps import SessionDep, SettingsDep
from resonfl_server.backend.models import Job, JobStatus, User
from resonfl_server.backend.services import accounts
from resonfl_server.backend.services.errors import Conflict
from resonfl_server.backend.web.session import CsrfChecked, WebUser
from resonfl_server.backend.web.templating import render
from resonfl.config import SITE_NAME_RE

router = APIRouter(tags=["web"], include_in_schema=False)


def _context(session: Session, user: User, timeout_s: float) -> dict[str, object]:
    running = session.scalars(
        select(Job).where(Job.status.in_([JobStatus.RUNNING, JobStatus.QUEUED]))
    )
    busy: dict[str, list[Job]] = {}
    for job in running:
        for site in job.sites:
            busy.setdefault(site, []).append(job)
    rows = [
        {"site": s, "online": accounts.is_online(s, timeout_s), "jobs": busy.get(s.name, [])}
        for s in accounts.list_sites(session)
    ]
    return {"user": user, "nav": "sites", "rows": rows, "name": "", "errors": {}}


@router.get("/sites")
def read_sites(
    request: Request, user: WebUser, session: SessionDep, settings: SettingsDep
) -> Response:
    return render(
        request, "pages/sites.html", _context(session, user, settings.site_heartbeat_timeout_s)
    )


@router.post("/sites", dependencies=[CsrfChecked])
def register_site(
    request: Request,
    user: WebUser,
    session: SessionDep,
    settings: SettingsDep,
    name: Annotated[str, Form()] = "",
) -> Response:
    context = _context(session, user, settings.site_heartbeat_timeout_s)
    name = name.strip()
    context["name"] = name
    if not user.is_admin:
        context["errors"] = {"name": "only an admin can register sites"}
        return render(request, "pages/sites.html", context, status_code=403)
    if not SITE_NAME_RE.fullmatch(name):
        context["errors"] = {
            "name": "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        }
        return render(request, "pages/sites.html", context, status_code=422)
    try:
        site, token = accounts.register_site(session, name)
    except Conflict as exc:
        context["errors"] = {"name": exc.detail}
        return render(request, "pages/sites.html", context, status_code=422)
    context = _context(session, user, settings.site_heartbeat_timeout_s)
    context["new_site"] = {"name": site.name, "token": token}
    return render(request, "pages/sites.html", context, status_code=201)
