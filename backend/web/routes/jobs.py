"""Jobs list, the live job page (htmx polls `_job_live`, the server stops it when the job
ends), cancel, logs and the Download buttons."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from resonfl_server.backend.api.deps import DispatcherDep, SessionDep, StoreDep
from resonfl_server.backend.models import Job, User
from resonfl_server.backend.services import jobs as job_service
from resonfl_server.backend.services import tracking, twins
from resonfl_server.backend.services.errors import Conflict, NotFound
from resonfl_server.backend.storage import ArtifactStore
from resonfl_server.backend.web import job_view
from resonfl_server.backend.web.session import CsrfChecked, WebUser
from resonfl_server.backend.web.templating import is_htmx, redirect, render

router = APIRouter(tags=["web"], include_in_schema=False)


def _emails(session: Session, jobs: list[Job]) -> dict[int, str]:
    ids = {j.owner_id for j in jobs}
    if not ids:
        return {}
    return {u.id: u.email for u in session.scalars(select(User).where(User.id.in_(ids)))}


def _not_found(request: Request, user: User, exc: NotFound) -> Response:
    context = {"user": user, "title": "Job not found", "message": exc.detail}
    return render(request, "pages/error.html", context, status_code=404)


@router.get("/jobs")
def read_jobs(request: Request, user: WebUser, session: SessionDep) -> Response:
    jobs, count = job_service.list_jobs(session, user, limit=200)
    emails = _emails(session, jobs)
    rows = [
        {
            "job": j,
            "owner": emails.get(j.owner_id, "?"),
            "done": sum(1 for r in j.rounds if r.status.value == "done"),
            "duration_s": job_view.duration_s(j) if j.started_at else None,
        }
        for j in jobs
    ]
    return render(
        request, "pages/jobs.html", {"user": user, "nav": "jobs", "rows": rows, "count": count}
    )


def _view(session: Session, store: ArtifactStore, user: User, job_id: int) -> job_view.JobView:
    job = job_service.get_job_for(session, user, job_id)
    logs = job_service.job_logs(session, store, user, job_id)
    view = job_view.build(job, _emails(session, [job]).get(job.owner_id, "?"), store, logs)
    view.twin = job_view.twin_panel(
        job, twins.latest_twin(session, job), twins.twin_unavailable(store, job)
    )
    return view


@router.get("/jobs/{job_id}")
def read_job(
    request: Request, user: WebUser, session: SessionDep, store: StoreDep, job_id: int
) -> Response:
    try:
        view = _view(session, store, user, job_id)
    except NotFound as exc:
        return _not_found(request, user, exc)
    template = "partials/_job_live.html" if is_htmx(request) else "pages/job.html"
    return render(request, template, {"user": user, "nav": "jobs", "v": view})


@router.get("/jobs/{job_id}/live")
def read_job_live(
    request: Request, user: WebUser, session: SessionDep, store: StoreDep, job_id: int
) -> Response:
    """The live region alone. Once the job has ended it is rendered without its poller, and
    HX-Trigger tells the page, so polling stops."""
    try:
        view = _view(session, store, user, job_id)
    except NotFound as exc:
        return _not_found(request, user, exc)
    headers = {"HX-Trigger": "job-ended"} if not view.polling else None
    return render(request, "partials/_job_live.html", {"user": user, "v": view}, headers=headers)


@router.get("/jobs/{job_id}/tensorboard.zip")
def download_tensorboard(
    request: Request, user: WebUser, session: SessionDep, store: StoreDep, job_id: int
) -> Response:
    """The TensorBoard event files of the job (global and per site) as a zip."""
    try:
        job = job_service.get_job_for(session, user, job_id)
    except NotFound as exc:
        return _not_found(request, user, exc)
    data = tracking.events_zip(store, job.id)
    if data is None:
        return _not_found(request, user, NotFound("no finished round yet, so no events"))
    name = f"job-{job.id}-tensorboard.zip"
    return Response(
        data, media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )  # fmt: skip


@router.post("/jobs/{job_id}/twin", dependencies=[CsrfChecked])
def create_twin(
    request: Request,
    user: WebUser,
    session: SessionDep,
    store: StoreDep,
    dispatcher: DispatcherDep,
    job_id: int,
) -> Response:
    """The "Run centralized twin" button: start it, then back to the job page (which shows
    both curves as they come). A job whose data the server does not hold shows why."""
    try:
        twins.create_twin(session, store, user, job_id, dispatcher)
    except NotFound as exc:
        return _not_found(request, user, exc)
    except Conflict:
        pass  # the page says why (the button is disabled with the reason)
    return redirect(request, f"/jobs/{job_id}")


@router.post("/jobs/{job_id}/cancel", dependencies=[CsrfChecked])
def cancel_job(
    request: Request,
    user: WebUser,
    session: SessionDep,
    store: StoreDep,
    job_id: int,
) -> Response:
    """Plain form: cancel, then back to the job page. htmx (the page's Cancel button): the live
    region, swapped in place, so the page shows "cancelled" without a reload and its poller
    stops (the region comes back without it, with HX-Trigger: job-ended)."""
    try:
        job_service.cancel_job(session, user, job_id)
    except NotFound as exc:
        return _not_found(request, user, exc)
    except Conflict:
        pass  # it ended meanwhile; the page shows how
    if not is_htmx(request):
        return redirect(request, f"/jobs/{job_id}")
    view = _view(session, store, user, job_id)
    headers = {"HX-Trigger": "job-ended"} if not view.polling else None
    return render(request, "partials/_job_live.html", {"user": user, "v": view}, headers=headers)


@router.get("/jobs/{job_id}/logs/{site}")
def read_job_log(
    request: Request, user: WebUser, session: SessionDep, store: StoreDep, job_id: int, site: str
) -> Response:
    try:
        job = job_service.get_job_for(session, user, job_id)
        logs = job_service.job_logs(session, store, user, job_id, site).get(site, [])
    except NotFound as exc:
        return _not_found(request, user, exc)
    context = {"user": user, "nav": "jobs", "job": job, "site": site, "logs": logs}
    return render(request, "pages/job_log.html", context)


def _download(
    session: Session, store: ArtifactStore, user: User, job_id: int, round_num: int | None
) -> FileResponse:
    path = job_service.model_file(session, store, user, job_id, round_num)
    job = job_service.get_job_for(session, user, job_id)
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in job.name)
    name = f"{slug}-job{job.id}-checkpoint.pt" if round_num is None else path.name
    return FileResponse(path, media_type="application/octet-stream", filename=name)


@router.get("/jobs/{job_id}/download")
def download_checkpoint(
    request: Request, user: WebUser, session: SessionDep, store: StoreDep, job_id: int
) -> Response:
    try:
        return _download(session, store, user, job_id, None)
    except NotFound as exc:
        return _not_found(request, user, exc)


@router.get("/jobs/{job_id}/rounds/{round_num}/download")
def download_round(
    request: Request,
    user: WebUser,
    session: SessionDep,
    store: StoreDep,
    job_id: int,
    round_num: int,
) -> Response:
    try:
        return _download(session, store, user, job_id, round_num)
    except NotFound as exc:
        return _not_found(request, user, exc)
