"""Jobs as their owners see them: read, list, cancel, logs, downloads.

`get_job_for` is the single ownership check: a user reaches only their own jobs (admins all);
another user's job is reported as not found, so job ids of others do not leak.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from resonfl_server.backend.models import INT_MAX, Job, SiteResult, User
from resonfl_server.backend.services.errors import Conflict, NotFound
from resonfl_server.backend.storage import ArtifactStore


def get_job_for(session: Session, user: User, job_id: int) -> Job:
    if not 0 < job_id <= INT_MAX:  # no such row can exist; the database would overflow
        raise NotFound(f"job {job_id} not found")
    job = session.get(Job, job_id, options=[selectinload(Job.rounds), selectinload(Job.results)])
    if job is None or (job.owner_id != user.id and not user.is_admin):
        raise NotFound(f"job {job_id} not found")
    return job


def list_jobs(
    session: Session, user: User, skip: int = 0, limit: int = 100
) -> tuple[list[Job], int]:
    query = select(Job)
    if not user.is_admin:
        query = query.where(Job.owner_id == user.id)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    jobs = session.scalars(query.order_by(Job.id.desc()).offset(skip).limit(limit))
    return list(jobs), count


def cancel_job(session: Session, user: User, job_id: int) -> Job:
    """Cancel a queued or running job (sites see it with their next check of the job)."""
    from resonfl_server.backend.services import rounds  # the round state machine (its own module)

    job = get_job_for(session, user, job_id)
    if job.status.is_terminal:
        raise Conflict(f"job {job_id} is already {job.status.value}")
    rounds.cancel_job(session, job.id, reason=f"cancelled by {user.email}")
    session.refresh(job)
    return job


def job_logs(
    session: Session, store: ArtifactStore, user: User, job_id: int, site: str | None = None
) -> dict[str, list[tuple[SiteResult, str]]]:
    """Each site's log per round (oldest first), optionally for one site only."""
    job = get_job_for(session, user, job_id)
    logs: dict[str, list[tuple[SiteResult, str]]] = {}
    for result in job.results:
        if site is not None and result.site != site:
            continue
        text = ""
        if result.log_key and store.exists(result.log_key):
            text = store.path(result.log_key).read_text("utf-8", errors="replace")
        logs.setdefault(result.site, []).append((result, text))
    return logs


def model_file(
    session: Session, store: ArtifactStore, user: User, job_id: int, round_num: int | None = None
) -> Path:
    """model_out/checkpoint.pt (round None) or files_out/GLOBAL_MODEL_round_N.pt."""
    job = get_job_for(session, user, job_id)
    path = store.global_model_path(job.id, round_num)
    if not path.is_file():
        what = "the final checkpoint" if round_num is None else f"round {round_num}'s global model"
        raise NotFound(f"job {job_id}: {what} is not available (job is {job.status.value})")
    return path
