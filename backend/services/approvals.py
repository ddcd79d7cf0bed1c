"""Site approvals: a site whose policy asks for it decides every job before the job starts.

    request   on submit: one pending `SiteDecision` per site of the job whose reported policy
              has require_approval (services/submissions.py, before `rounds.start_job`)
    hold      the job stays queued while any decision is pending (`rounds.start_job`,
              `rounds.init_job` and `rounds.reconcile` ask `rounds.awaiting_approval`)
    decide    the site's operator (`resonfl site approve|reject`, the site token) approves:
              the last decision sends the start; or rejects: the site leaves the job, which
              runs on the other sites when they still meet min_clients and otherwise fails
              with the site's reason. Each row keeps who decided, when and why (never deleted).

The site enforces its own policy as well (workers/site/policy.py): a job the server started
without its approval is refused there.
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from resonfl_server.backend.models import (
    INT_MAX,
    DecisionStatus,
    Job,
    JobStatus,
    Site,
    SiteDecision,
    User,
    utcnow,
)
from resonfl_server.backend.services import rounds
from resonfl_server.backend.services.dispatch import Dispatcher
from resonfl_server.backend.services.errors import Conflict, Forbidden, InvalidSubmission, NotFound

log = logging.getLogger("resonfl.approvals")


def request(session: Session, job: Job) -> list[str]:
    """Ask each of the job's sites whose policy requires approval; return those sites."""
    sites = session.scalars(select(Site).where(Site.name.in_(job.sites)))
    asked = sorted(s.name for s in sites if (s.policy or {}).get("require_approval"))
    for name in asked:
        session.add(SiteDecision(job_id=job.id, site=name, status=DecisionStatus.PENDING))
    session.flush()
    return asked


def for_site(
    session: Session, site: Site, include_decided: bool = False
) -> list[tuple[Job, SiteDecision, str]]:
    """The jobs asking this site for a decision (newest first): job, decision, submitter."""
    query = (
        select(Job, SiteDecision, User.email)
        .join(SiteDecision, SiteDecision.job_id == Job.id)
        .join(User, User.id == Job.owner_id)
        .where(SiteDecision.site == site.name)
        .order_by(Job.id.desc())
    )
    if not include_decided:
        query = query.where(SiteDecision.status == DecisionStatus.PENDING)
    return [(job, decision, email) for job, decision, email in session.execute(query).all()]


def decide(
    session: Session,
    site: Site,
    job_id: int,
    approve: bool,
    operator: str,
    reason: str | None,
    dispatcher: Dispatcher,
) -> SiteDecision:
    """Record the site's decision on a job awaiting it; start or fail the job accordingly."""
    job = session.get(Job, job_id) if 0 < job_id <= INT_MAX else None
    if job is None:
        raise NotFound(f"job {job_id} not found")
    asked = session.scalar(
        select(SiteDecision.id).where(SiteDecision.job_id == job.id, SiteDecision.site == site.name)
    )
    if site.name not in job.sites and asked is None:
        raise Forbidden(f"site {site.name!r} does not take part in job {job_id}")
    reason = (reason or "").strip() or None
    if not approve and reason is None:
        raise InvalidSubmission("", "reason", "say why the site rejects the job (--reason)")
    row = session.scalar(
        select(SiteDecision).where(SiteDecision.job_id == job.id, SiteDecision.site == site.name)
    )
    if row is not None and row.status != DecisionStatus.PENDING:
        raise Conflict(f"site {site.name!r} already {row.status.value} job {job_id}")
    if row is None:
        raise Conflict(f"job {job_id} did not ask site {site.name!r} for approval")
    if job.status != JobStatus.QUEUED:
        raise Conflict(f"job {job_id} is {job.status.value}; it no longer awaits a decision")
    status = DecisionStatus.APPROVED if approve else DecisionStatus.REJECTED
    decided = rounds.changed(
        session,
        update(SiteDecision)
        .where(SiteDecision.id == row.id, SiteDecision.status == DecisionStatus.PENDING)
        .values(status=status, operator=operator, reason=reason, decided_at=utcnow()),
    )
    session.commit()
    if not decided:
        session.refresh(row)
        raise Conflict(f"site {site.name!r} already {row.status.value} job {job_id}")
    log.info("site %s (%s) %s job %s: %s", site.name, operator, status.value, job_id, reason)
    if not approve and not _leave(session, job, site.name):
        rounds.fail_job(session, job.id, f"rejected by {site.name} ({operator}): {reason}")
    elif not rounds.awaiting_approval(session, job.id):
        rounds.start_job(session, job.id, dispatcher)
    session.refresh(row)
    return row


def _leave(session: Session, job: Job, site: str) -> bool:
    """A rejecting site leaves the job; True when enough sites remain for `min_clients`
    (the job then runs on the others), False when the rejection must fail the job."""
    remaining = [s for s in job.sites if s != site]
    if len(remaining) < job.min_clients:
        return False
    job.sites = remaining
    session.commit()
    log.info("job %s goes on without %s: %s", job.id, site, ", ".join(remaining))
    return True
