"""The job wizard: Model → Training → Federation → Data → Review, one step per screen.

Every POST stores what was typed (even when invalid) before validating, so Back, Next and
revisiting a step never lose input; errors are rendered beside their fields. Review renders
the SDK's own `Job.rendered_files()`; Submit hands the rendered folder to the same
`services.submissions.create_job` the REST API uses.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.datastructures import FormData, UploadFile

from backend.api.deps import DispatcherDep, SessionDep, SettingsDep, StoreDep
from backend.models import User
from backend.services import accounts, submissions
from backend.services.archives import safe_extract, tree, write_zip
from backend.services.errors import InvalidSubmission, PayloadTooLarge, ServiceError
from backend.web import algorithms, drafts
from backend.web.drafts import STEP_TITLES, STEPS, Draft, DraftStore, StepInvalid
from backend.web.forms import Errors, FieldSpec, fields_of, form_to_raw, parse_training
from backend.web.guidance import federation_notes, training_notes
from backend.web.highlight import highlight
from backend.web.session import CsrfChecked, WebUser, load_session
from backend.web.templating import redirect, render
from resonfl.catalog import list_examples
from resonfl.config import SITE_NAME_RE, TrainingConfig

router = APIRouter(tags=["web"], include_in_schema=False)

_CHUNK = 1 << 20


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
    errors = _step_errors(request, session, draft, step) if step in draft.saved else {}
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
    return render(request, "partials/_guidance.html", {"notes": _training_notes(draft, raw)})


def _save(
    request: Request, session: Session, draft: Draft, step: str, form: FormData, nav: str
) -> Errors:
    """Store the step's input, then validate it; returns the errors (empty when valid)."""
    store = _store(request)
    if step == "model":
        errors = _save_model(store, draft, form)
    elif step == "training":
        draft.raw["training"] = form_to_raw(form, fields_of(TrainingConfig))
        errors = _step_errors(request, session, draft, step)
    elif step == "federation":
        draft.raw["federation"] = _federation_form(form)
        errors = _step_errors(request, session, draft, step)
    else:
        errors = _save_data(request, session, store, draft, form, nav)
    if errors:
        if step in draft.saved:
            draft.saved.remove(step)
    elif step not in draft.saved and nav != "back":
        draft.saved.append(step)
    return errors


def _step_errors(request: Request, session: Session, draft: Draft, step: str) -> Errors:
    store = _store(request)
    if step == "model":
        return drafts.model_config(store, draft)[1]
    if step == "training":
        return parse_training(drafts.training_raw(draft))[1]
    registered = _registered(session)
    fed, errors = drafts.federation_config(drafts.federation_raw(draft, registered), registered)
    if step == "federation":
        return errors
    sites = (
        fed.sites
        if fed is not None
        else drafts.selected_sites(drafts.federation_raw(draft, registered))
    )
    return drafts.data_errors(store, draft, sites)


def _registered(session: Session) -> list[str]:
    return [site.name for site in accounts.list_sites(session)]


# ----------------------------------------------------------------------------- model
def _save_model(store: DraftStore, draft: Draft, form: FormData) -> Errors:
    keys = ("name", "source", "example", "class_name", "train_fn", "eval_fn", "model_args")
    previous = draft.raw.get("model", drafts.default_model_raw())
    raw = {k: str(form.get(k, previous.get(k, ""))).strip() for k in keys}
    if raw["source"] not in ("example", "upload"):
        raw["source"] = "example"
    draft.raw["model"] = raw
    folder = store.folder(draft.id)
    errors: Errors = {}
    upload = form.get("model_def")
    if isinstance(upload, UploadFile) and upload.filename:
        data = upload.file.read(4 * 1024 * 1024 + 1)
        try:
            if len(data) > 4 * 1024 * 1024:
                raise ValueError("larger than 4 MiB")
            (folder / "model_def.py").write_text(data.decode("utf-8"), encoding="utf-8")
            draft.model_upload_name = upload.filename
            raw["source"] = "upload"
        except (UnicodeDecodeError, ValueError) as exc:
            errors["model_def"] = f"{upload.filename} is not a UTF-8 Python file ({exc})"
    if form.get("remove_checkpoint") == "on" and draft.checkpoint_name:
        (folder / draft.checkpoint_name).unlink(missing_ok=True)
        draft.checkpoint_name = draft.checkpoint_original = None
    ckpt = form.get("checkpoint")
    if isinstance(ckpt, UploadFile) and ckpt.filename:
        errors.update(_save_checkpoint(folder, draft, ckpt))
    _, model_errors = drafts.model_config(store, draft)
    return {**model_errors, **errors}


def _save_checkpoint(folder: Path, draft: Draft, upload: UploadFile) -> Errors:
    suffix = ".safetensors" if (upload.filename or "").endswith(".safetensors") else ".pt"
    target = folder / f"checkpoint{suffix}"
    staging = folder / f"upload{suffix}"
    with staging.open("wb") as out:
        shutil.copyfileobj(upload.file, out, _CHUNK)
    try:
        submissions.check_checkpoint(staging)
    except InvalidSubmission as exc:
        staging.unlink(missing_ok=True)
        return {"checkpoint": f"{upload.filename}: {exc.message}"}
    if draft.checkpoint_name:
        (folder / draft.checkpoint_name).unlink(missing_ok=True)
    staging.replace(target)
    draft.checkpoint_name, draft.checkpoint_original = target.name, upload.filename
    return {}


# ----------------------------------------------------------------------------- federation
def _federation_form(form: FormData) -> dict[str, str]:
    """What was posted; an input left out of the post keeps its default (federation_raw)."""
    raw = {k: str(form[k]).strip() for k in drafts.federation_form_keys() if k in form}
    raw["sites"] = ",".join(str(s) for s in form.getlist("sites") if SITE_NAME_RE.fullmatch(str(s)))
    return raw


# ----------------------------------------------------------------------------- data
def _save_data(
    request: Request,
    session: Session,
    store: DraftStore,
    draft: Draft,
    form: FormData,
    nav: str,
) -> Errors:
    keys = ("mode", "split", "alpha", "seed", "requirements")
    raw = {k: str(form.get(k, "")).strip() for k in keys}
    draft.raw["data"] = raw
    registered = _registered(session)
    fed, _ = drafts.federation_config(drafts.federation_raw(draft, registered), registered)
    sites = fed.sites if fed is not None else []
    if not sites:
        return {"shards": "choose the sites in the Federation step first"}
    errors: Errors = {}
    upload_file = form.get("requirements_file")
    if isinstance(upload_file, UploadFile) and upload_file.filename:
        raw["requirements"] = (
            upload_file.file.read(256 * 1024).decode("utf-8", errors="replace").strip()
        )
    folder = drafts.shards_dir(store, draft)
    for site in sites:
        upload = form.get(f"shard__{site}")
        if isinstance(upload, UploadFile) and upload.filename:
            errors.update(_extract_shard(folder, draft, site, upload, request))
    if raw["mode"] == "generate" and nav in ("next", "generate"):
        errors.update(_generate(store, draft, raw, sites))
    if errors:
        return errors
    return drafts.data_errors(store, draft, sites)


def _extract_shard(
    folder: Path, draft: Draft, site: str, upload: UploadFile, request: Request
) -> Errors:
    target = folder / site
    staging = folder / f".{site}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    max_bytes = request.app.state.settings.max_upload_bytes
    try:
        written = safe_extract(upload.file, staging, f"shard for {site}", max_bytes)
    except (InvalidSubmission, PayloadTooLarge) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        return {f"shard__{site}": exc.detail}
    tops = {p.parts[0] for p in written}
    inner = staging / site if tops == {site} and (staging / site).is_dir() else staging
    shutil.rmtree(target, ignore_errors=True)
    inner.replace(target)
    shutil.rmtree(staging, ignore_errors=True)
    draft.shards[site] = f"uploaded {upload.filename}"
    return {}


def _generate(store: DraftStore, draft: Draft, raw: dict[str, str], sites: list[str]) -> Errors:
    from resonfl.catalog.shards import make_shards

    info = drafts.example_or_none(draft.raw.get("model", {}))
    if info is None:
        return {
            "mode": "generating shards needs a catalog example (Model step); upload shards instead"
        }
    if raw["split"] not in ("iid", "dirichlet"):
        return {"split": "choose IID or Dirichlet"}
    try:
        alpha = float(raw["alpha"] or "0.5")
        if alpha <= 0:
            raise ValueError
    except ValueError:
        return {"alpha": "a number greater than 0 (smaller = more skewed labels per site)"}
    try:
        seed = int(raw["seed"] or "0")
    except ValueError:
        return {"seed": "a whole number"}
    how = (
        f"generated from {info.name}: {raw['split']}"
        + (f" (alpha {alpha:g})" if raw["split"] == "dirichlet" else "")
        + f", seed {seed}"
    )
    folder = drafts.shards_dir(store, draft)
    if all(draft.shards.get(s) == how and (folder / s).is_dir() for s in sites):
        return {}
    work = Path(tempfile.mkdtemp(dir=store.folder(draft.id)))
    try:
        made = make_shards(info.name, work, len(sites), raw["split"], alpha, seed, verbose=False)  # type: ignore[arg-type]
    except ValueError as exc:
        shutil.rmtree(work, ignore_errors=True)
        return {"split": str(exc)}
    folder.mkdir(parents=True, exist_ok=True)
    for site, made_dir in zip(sites, made.values(), strict=True):
        shutil.rmtree(folder / site, ignore_errors=True)
        made_dir.replace(folder / site)
        draft.shards[site] = how
    shutil.rmtree(work, ignore_errors=True)
    return {}


# ----------------------------------------------------------------------------- rendering
def _training_notes(draft: Draft, raw: dict[str, str]) -> list[Any]:
    info = drafts.example_or_none(draft.raw.get("model", drafts.default_model_raw()))
    return training_notes(raw, drafts.training_defaults(draft), info.name if info else None)


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
    store = _store(request)
    if step == "model":
        context["raw"] = draft.raw.get("model", drafts.default_model_raw())
        context["examples"] = list_examples()
    elif step == "training":
        raw = drafts.training_raw(draft)
        info = drafts.example_or_none(draft.raw.get("model", {}))
        context.update(
            raw=raw,
            fields=_training_fields(),
            notes=_training_notes(draft, raw),
            defaults=drafts.training_defaults(draft),
            example_notes=info.notes if info else {},
        )
    elif step == "federation":
        registered = accounts.list_sites(session)
        raw = drafts.federation_raw(draft, [s.name for s in registered])
        model, _ = drafts.model_config(store, draft)
        timeout = request.app.state.settings.site_heartbeat_timeout_s
        context.update(
            raw=raw,
            chosen=drafts.selected_sites(raw),
            sites=[(s, accounts.is_online(s, timeout)) for s in registered],
            fields=drafts.federation_fields(),
            workflows=drafts.WORKFLOWS,
            algorithms=list(algorithms.algorithms().values()),
            notes=federation_notes(raw, model.source if model else ""),
        )
    elif step == "data":
        names = _registered(session)
        fed, _ = drafts.federation_config(drafts.federation_raw(draft, names), names)
        folder = drafts.shards_dir(store, draft)
        sites = fed.sites if fed else []
        context.update(
            raw=drafts.data_raw(draft),
            sites=[(s, draft.shards.get(s) if (folder / s).is_dir() else None) for s in sites],
            example=drafts.example_or_none(draft.raw.get("model", {})),
        )
    return render(request, f"pages/wizard_{step}.html", context, status_code=status_code)


def _training_fields() -> list[tuple[str, list[FieldSpec]]]:
    """The TrainingConfig inputs, grouped as the playbook thinks about them."""
    groups = {
        "Optimizer": ["optimizer", "lr", "weight_decay", "momentum", "betas"],
        "Steps and schedule": [
            "batch_size", "eval_batch_size", "local_steps", "local_epochs", "lr_schedule",
            "warmup_steps", "min_lr_ratio", "continuous_schedule", "persist_optimizer_state",
        ],
        "Recipe knobs": ["amp", "grad_clip", "seed", "ema_decay", "ema_persist", "label_smoothing", "tta_hflip"],
        "Environment": ["extra"],
    }  # fmt: skip
    by_name = {f.name: f for f in fields_of(TrainingConfig)}
    out = [
        (title, [by_name.pop(n) for n in names if n in by_name]) for title, names in groups.items()
    ]
    if by_name:  # a field added to TrainingConfig later still gets an input
        out.append(("More", list(by_name.values())))
    return out


# ----------------------------------------------------------------------------- review
def _review(request: Request, user: User, session: Session, draft: Draft) -> Response:
    try:
        job = drafts.build_job(_store(request), draft, _registered(session))
    except StepInvalid as exc:
        return _render_step(request, user, session, draft, exc.step, exc.errors, status_code=200)
    files = [(name, text, highlight(text, name)) for name, text in job.rendered_files().items()]
    context = {
        "user": user,
        "nav": "new",
        "draft": draft,
        "step": "review",
        "steps": _nav(draft, "review"),
        "job": job,
        "files": files,
        "errors": {},
    }
    return render(request, "pages/wizard_review.html", context)


@router.get("/wizard/{draft_id}/review/job.zip")
def download_job_folder(
    request: Request, user: WebUser, session: SessionDep, draft_id: str
) -> Response:
    draft = _draft(request, user, draft_id)
    if draft is None:
        return _not_found(request, user)
    try:
        job = drafts.build_job(_store(request), draft, _registered(session))
    except StepInvalid as exc:
        return redirect(request, f"/wizard/{draft.id}/{exc.step}")
    scratch = Path(tempfile.mkdtemp(dir=_store(request).folder(draft.id)))
    folder = job.render(scratch / "job")
    archive = write_zip(scratch / "job.zip", tree(folder, prefix=f"{_slug(job.name)}/"))
    return FileResponse(
        archive,
        media_type="application/zip",
        filename=f"{_slug(job.name)}.zip",
        background=BackgroundTask(shutil.rmtree, scratch, True),
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
        job = drafts.build_job(_store(request), draft, _registered(session))
    except StepInvalid as exc:
        return redirect(request, f"/wizard/{draft.id}/{exc.step}")
    scratch = Path(tempfile.mkdtemp(dir=_store(request).folder(draft.id)))
    try:
        archive = write_zip(scratch / "job.zip", tree(job.render(scratch / "job")))
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
        shutil.rmtree(scratch, ignore_errors=True)
    draft.job_id = row.id
    _store(request).save(draft)
    # the job's workspace holds its own copy now; keep draft.json only
    shutil.rmtree(drafts.shards_dir(_store(request), draft), ignore_errors=True)
    load_session(request).set_draft(None)
    return redirect(request, f"/jobs/{row.id}")


def _slug(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.")
    return keep or "job"
