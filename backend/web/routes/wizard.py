"""The job wizard: Model → Training → Federation → Data → Review, one step per screen.

Every POST stores what was typed (even when invalid) before validating, so Back, Next and
revisiting a step never lose input; errors are rendered beside their fields. Review renders
the SDK's own `Job.rendered_files()`; Submit hands the rendered folder to the same
`services.submissions.create_job` the REST API uses.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.datastructures import FormData

from resonfl_server.backend.api.deps import DispatcherDep, SessionDep, SettingsDep, StoreDep
from resonfl_server.backend.models import User
from resonfl_server.backend.services import accounts, draft_files, submissions
from resonfl_server.backend.services import jobs as job_service
from resonfl_server.backend.services.errors import NotFound, ServiceError
from resonfl_server.backend.web import clones, drafts
from resonfl_server.backend.web.drafts import STEP_TITLES, STEPS, Draft, DraftStore, StepInvalid
from resonfl_server.backend.web.forms import Errors, fields_of, form_to_raw
from resonfl_server.backend.web.highlight import highlight
from resonfl_server.backend.web.session import CsrfChecked, WebUser, load_session
from resonfl_server.backend.web.templating import redirect, render
from resonfl_server.backend.web.wizard_steps import (
    HANDLERS,
    StepContext,
    dataset_holders_context,
    holdings_of,
    training_notes_for,
)
from resonfl.config import TrainingConfig

router = APIRouter(tags=["web"], include_in_schema=False)


def _store(request: Request) -> DraftStore:
    return DraftStore.for_data_dir(request.app.state.settings.data_dir)


def _draft(request: Request, user: User, draft_id: str) -> Draft | None:
    return _store(request).get(draft_id, user.id)


def _not_found(request: Request, user: User) -> Response:
    context = {
        "user": user,
        "title": "Draft not found",
        "message": "This job draft does not exist or is not yours.",
    }
    return render(request, "pages/error.html", context, status_code=404)


# ----------------------------------------------------------------------------- entry
@router.get("/jobs/new")
def read_new_job(request: Request, user: WebUser) -> Response:
    """Resume the session's draft, or start one."""
    sess = load_session(request)
    draft = _draft(request, user, sess.draft_id) if sess.draft_id else None
    if draft is None or draft.job_id is not None:
        draft = _store(request).create(user.id)
        sess.set_draft(draft.id)
    return redirect(request, f"/wizard/{draft.id}/model")


@router.post("/wizard/new", dependencies=[CsrfChecked])
def create_draft(request: Request, user: WebUser) -> Response:
    draft = _store(request).create(user.id)
    load_session(request).set_draft(draft.id)
    return redirect(request, f"/wizard/{draft.id}/model")


# ----------------------------------------------------------------------------- steps
@router.get("/wizard/{draft_id}/{step}")
def read_step(
    request: Request, user: WebUser, session: SessionDep, draft_id: str, step: str
) -> Response:
    draft = _draft(request, user, draft_id)
    if draft is None or step not in STEPS:
        return _not_found(request, user)
    if step == "review":
        return _review(request, user, session, draft)
    ctx = _context(request, session, draft)
    errors = HANDLERS[step].errors(ctx) if step in draft.saved else {}
    return _render_step(request, user, session, draft, step, errors)


@router.post("/wizard/{draft_id}/{step}", dependencies=[CsrfChecked])
async def save_step(
    request: Request, user: WebUser, session: SessionDep, draft_id: str, step: str
) -> Response:
    draft = _draft(request, user, draft_id)
    if draft is None or step not in STEPS[:-1]:
        return _not_found(request, user)
    form = await request.form()
    nav = str(form.get("nav", "next"))
    errors = await run_in_threadpool(_save, request, session, draft, step, form, nav)
    _store(request).save(draft)
    index = STEPS.index(step)
    if nav == "back" and index > 0:
        return redirect(request, f"/wizard/{draft.id}/{STEPS[index - 1]}")
    if errors or nav != "next":
        return _render_step(
            request, user, session, draft, step, errors, status_code=422 if errors else 200
        )
    return redirect(request, f"/wizard/{draft.id}/{STEPS[index + 1]}")


@router.post("/wizard/{draft_id}/training/guidance", dependencies=[CsrfChecked])
async def read_training_guidance(request: Request, user: WebUser, draft_id: str) -> Response:
    """htmx: the playbook notes for the values in the form right now (nothing is saved)."""
    draft = _draft(request, user, draft_id)
    if draft is None:
        return _not_found(request, user)
    raw = form_to_raw(await request.form(), fields_of(TrainingConfig))
    return render(request, "partials/_guidance.html", {"notes": training_notes_for(draft, raw)})


@router.get("/wizard/{draft_id}/data/holders")
def read_dataset_holders(
    request: Request, user: WebUser, session: SessionDep, draft_id: str, dataset: str = ""
) -> Response:
    """htmx: the sites that hold `dataset`, with their counts (nothing is saved)."""
    draft = _draft(request, user, draft_id)
    if draft is None:
        return _not_found(request, user)
    context = dataset_holders_context(_context(request, session, draft), dataset)
    return render(request, "partials/_dataset_holders.html", context)


def _context(request: Request, session: Session, draft: Draft) -> StepContext:
    return StepContext(request, session, _store(request), draft)


def _save(
    request: Request, session: Session, draft: Draft, step: str, form: FormData, nav: str
) -> Errors:
    """Store the step's input, then validate it; returns the errors (empty when valid)."""
    errors = HANDLERS[step].save(_context(request, session, draft), form, nav)
    if errors:
        if step in draft.saved:
            draft.saved.remove(step)
    elif step not in draft.saved and nav != "back":
        draft.saved.append(step)
    return errors


def _registered(session: Session) -> list[str]:
    return [site.name for site in accounts.list_sites(session)]


def _holdings(session: Session) -> drafts.Holdings:
    return holdings_of(accounts.list_sites(session))


# ----------------------------------------------------------------------------- rendering
def _nav(draft: Draft, step: str) -> list[dict[str, Any]]:
    return [
        {
            "key": s,
            "title": STEP_TITLES[s],
            "current": s == step,
            "saved": s in draft.saved,
            "n": i + 1,
        }
        for i, s in enumerate(STEPS)
    ]


def _render_step(
    request: Request,
    user: User,
    session: Session,
    draft: Draft,
    step: str,
    errors: Errors,
    status_code: int = 200,
) -> Response:
    context: dict[str, Any] = {
        "user": user,
        "nav": "new",
        "draft": draft,
        "step": step,
        "steps": _nav(draft, step),
        "errors": errors,
    }
    context.update(HANDLERS[step].context(_context(request, session, draft)))
    return render(request, f"pages/wizard_{step}.html", context, status_code=status_code)


# ----------------------------------------------------------------------------- review
def _review(request: Request, user: User, session: Session, draft: Draft) -> Response:
    try:
        job = drafts.build_job(_store(request), draft, _registered(session), _holdings(session))
    except StepInvalid as exc:
        return _render_step(request, user, session, draft, exc.step, exc.errors, status_code=200)
    rendered = job.rendered_files()
    files = [(name, text, highlight(text, name)) for name, text in rendered.items()]
    context = {
        "user": user,
        "nav": "new",
        "draft": draft,
        "step": "review",
        "steps": _nav(draft, "review"),
        "job": job,
        "files": files,
        "errors": {},
        "clone": _clone_review(request, user, session, draft, job, rendered),
    }
    return render(request, "pages/wizard_review.html", context)


def _clone_review(
    request: Request, user: User, session: Session, draft: Draft, job: Any, files: dict[str, str]
) -> clones.CloneReview | None:
    if draft.clone_of is None:
        return None
    try:
        original = job_service.get_job_for(session, user, draft.clone_of)
    except NotFound:
        return None
    return clones.review(request.app.state.store, draft, original, job, files)


@router.post("/jobs/{job_id}/clone", dependencies=[CsrfChecked])
def clone_job(
    request: Request, user: WebUser, session: SessionDep, store: StoreDep, job_id: int
) -> Response:
    """"Clone with one change": the wizard opens with every value of the job copied."""
    try:
        job = job_service.get_job_for(session, user, job_id)
    except NotFound:
        return _not_found(request, user)
    draft = clones.clone_job(_store(request), store, user.id, job)
    load_session(request).set_draft(draft.id)
    return redirect(request, f"/wizard/{draft.id}/training")


@router.get("/wizard/{draft_id}/review/job.zip")
def download_job_folder(
    request: Request, user: WebUser, session: SessionDep, draft_id: str
) -> Response:
    draft = _draft(request, user, draft_id)
    if draft is None:
        return _not_found(request, user)
    try:
        job = drafts.build_job(_store(request), draft, _registered(session), _holdings(session))
    except StepInvalid as exc:
        return redirect(request, f"/wizard/{draft.id}/{exc.step}")
    scratch, archive = draft_files.job_zip(
        job, _store(request).folder(draft.id), prefix=f"{_slug(job.name)}/"
    )
    return FileResponse(
        archive,
        media_type="application/zip",
        filename=f"{_slug(job.name)}.zip",
        background=BackgroundTask(draft_files.remove_tree, scratch),
    )


@router.post("/wizard/{draft_id}/review/submit", dependencies=[CsrfChecked])
def submit_draft(
    request: Request,
    user: WebUser,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    dispatcher: DispatcherDep,
    draft_id: str,
) -> Response:
    draft = _draft(request, user, draft_id)
    if draft is None:
        return _not_found(request, user)
    if draft.job_id is not None:
        return redirect(request, f"/jobs/{draft.job_id}")
    try:
        job = drafts.build_job(_store(request), draft, _registered(session), _holdings(session))
    except StepInvalid as exc:
        return redirect(request, f"/wizard/{draft.id}/{exc.step}")
    scratch, archive = draft_files.job_zip(job, _store(request).folder(draft.id))
    try:
        with archive.open("rb") as fh:
            submission = submissions.Submission(job_zip=submissions.Upload("job.zip", fh))
            row = submissions.create_job(
                session, store, user, submission, dispatcher, settings.max_upload_bytes
            )
    except ServiceError as exc:
        files = [(n, t, highlight(t, n)) for n, t in job.rendered_files().items()]
        context = {
            "user": user, "nav": "new", "draft": draft, "step": "review",
            "steps": _nav(draft, "review"), "job": job, "files": files,
            "submit_error": exc.detail,
        }  # fmt: skip
        return render(request, "pages/wizard_review.html", context, status_code=422)
    finally:
        draft_files.remove_tree(scratch)
    draft.job_id = row.id
    _store(request).save(draft)
    # the job's workspace holds its own copy now; keep draft.json only
    draft_files.remove_tree(drafts.shards_dir(_store(request), draft))
    load_session(request).set_draft(None)
    return redirect(request, f"/jobs/{row.id}")


def _slug(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.")
    return keep or "job"
