"""The round state machine: the job store is the source of truth, Celery only delivers.

Life of a job (rounds are 0-based):

    start_job        queued, send_start                           (API: submit)
    init_job         ask round 0's sites to prepare (bundle, data, job process), build the
                     initial weights in the sandbox, open round 0    (aggregator: start task)
    record_result    a site's update or error is in; enough? send_aggregate, else send_fold
                                                                    (API: site result)
    fold_arrived     fold that update into the round's running sum now, so aggregation hides
                     behind the slowest site (a cache: see folds.py)  (aggregator: fold task)
    aggregate_round  exactly once per (job, round): fold the updates not folded yet, persist,
                     open the next round or write model_out/checkpoint.pt and finish
                                                                    (aggregator: aggregate task)
    reconcile        deadlines, silent sites, lost messages, restarts (aggregator: loop)
    cancel_job       cancelled; late results are ignored            (API: cancel)

Every function is safe to run twice: state changes are conditional UPDATEs (or inserts under a
unique constraint), so a redelivered message or two aggregators never do the work twice.
Database writes are committed *before* messages are sent, so a worker never receives work the
database does not know about; a message lost in between is found again by `reconcile`.
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, Executable, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from resonfl_server.backend.models import (
    Artifact,
    DecisionStatus,
    Job,
    JobStatus,
    ResultStatus,
    Round,
    RoundStatus,
    SecAggRound,
    Site,
    SiteDecision,
    SiteResult,
    SiteStatus,
    utcnow,
)
from resonfl_server.backend.services import folds, secagg
from resonfl_server.backend.services.dispatch import Dispatcher
from resonfl_server.backend.storage import ArtifactStore
from resonfl.job import REQUIREMENTS
from resonfl.job import Job as JobSpec
from resonfl.runner import SandboxError, WarmInit, init_global_weights

if TYPE_CHECKING:
    from resonfl.fl.rounds import RoundFold, SiteUpdate

log = logging.getLogger("resonfl.rounds")

PENDING_RESULT = (ResultStatus.QUEUED, ResultStatus.TRAINING, ResultStatus.UPLOADING)
INIT_TIMEOUT_S = 1800.0
AGGREGATE_LEASE_S = 600.0  # an "aggregating" round older than this lost its aggregator
MAX_REDISPATCH = 1  # a silent site's task is sent again once, then the site is failed
STATE_DIR = "server_state"


class RoundError(RuntimeError):
    """The job cannot go on; the message is stored as the job's error."""


@dataclass
class ReconcileReport:
    """What one `reconcile` pass did (logged by the aggregator, asserted by tests)."""

    started: list[int] = field(default_factory=list)
    aggregated: list[tuple[int, int]] = field(default_factory=list)
    redispatched: list[tuple[int, int, str]] = field(default_factory=list)
    failed_sites: list[tuple[int, int, str]] = field(default_factory=list)
    failed_jobs: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(vars(self).values())


# ------------------------------------------------------------------------------ start
def start_job(session: Session, job_id: int, dispatcher: Dispatcher) -> None:
    """Mark the (just submitted) job queued, commit, and ask the aggregator to start it;
    a job awaiting a site's approval waits (services/approvals.py sends the start)."""
    job = _job(session, job_id)
    if job.status != JobStatus.QUEUED:
        return
    session.commit()
    if awaiting_approval(session, job_id):
        return
    dispatcher.send_start(job_id)


def awaiting_approval(session: Session, job_id: int) -> list[str]:
    """The sites whose decision on the job is still pending (their policy asks for one)."""
    return list(
        session.scalars(
            select(SiteDecision.site)
            .where(SiteDecision.job_id == job_id, SiteDecision.status == DecisionStatus.PENDING)
            .order_by(SiteDecision.site)
        )
    )


def init_job(
    session: Session,
    store: ArtifactStore,
    job_id: int,
    dispatcher: Dispatcher,
    warm: WarmInit | None = None,
) -> bool:
    """Aggregator side of start: check resources, build the initial weights (in `warm`'s
    pre-started process when given), open round 0; the step's phases go to the job row.

    Returns False when another delivery already did it (or the job is no longer queued).
    """
    now = utcnow()
    if awaiting_approval(session, job_id):
        session.commit()
        return False  # a stray start (reconcile, a redelivery): the sites have not all approved
    claimed = _changed(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.RUNNING, started_at=now),
    )
    session.commit()
    job = _job(session, job_id)
    has_round0 = session.scalar(select(Round.id).where(Round.job_id == job_id, Round.number == 0))
    if not claimed and not (job.status == JobStatus.RUNNING and has_round0 is None):
        return False  # a duplicate start; the first delivery owns the job
    try:
        spec = _load_spec(store, job_id)
        _check_sites(session, job, spec)
        # the sites start the job's process (seconds, cold) while we build the weights
        for site in spec.workflow.sites_for_round(0, list(job.sites)):
            dispatcher.send_prepare(site, job_id)
        scratch = store.scratch_dir()
        try:
            out = scratch / "init.safetensors"
            job.init_phases = _init_weights(
                spec.job_dir,
                out,
                scratch / "work",
                min(spec.round_timeout_s, INIT_TIMEOUT_S),
                warm,
            )
            sites = _open_round(session, store, job, spec, 0, out)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    except IntegrityError:
        session.rollback()
        return False  # a concurrent delivery opened round 0 first
    except Exception as exc:  # noqa: BLE001 - any failure here ends the job with its reason
        session.rollback()
        _fail_job(session, job_id, f"could not start: {exc}{_requirements_hint(store, job_id, exc)}")
        return False
    for site in sites:
        dispatcher.send_train(site, job_id, 0)
    return True


def _requirements_hint(store: ArtifactStore, job_id: int, exc: Exception) -> str:
    """The aggregator builds the model class without the job's requirements (only sites
    install them): a model_def.py that imports one at module level fails here; say so."""
    text = f"{exc} {getattr(exc, 'log', '')}"
    if "ModuleNotFoundError" not in text or not (store.job_folder(job_id) / REQUIREMENTS).is_file():
        return ""
    return (
        " (the server builds the model class without the job's requirements.txt, which only "
        "sites install: import those packages inside the train function, not at the top of "
        "model_def.py)"
    )


# ------------------------------------------------------------------------------ results
def record_result(
    session: Session,
    job_id: int,
    round_num: int,
    dispatcher: Dispatcher | None = None,
    *,
    site: str | None = None,
) -> bool:
    """A site's result row (done or failed) is flushed; commit it and aggregate when due.

    The site API has already written the site's report to its SiteResult row, so only ids
    cross here. Returns True when an aggregate was requested. A done update (`site`) of a
    round that is not due yet is sent to be folded now (`fold_arrived`); the update that makes
    the round due is folded by the aggregation itself.
    Calling it again for the same result changes nothing and may re-send the (idempotent)
    fold or aggregate request.
    """
    session.commit()
    rnd = session.scalar(select(Round).where(Round.job_id == job_id, Round.number == round_num))
    job = session.get(Job, job_id)
    if rnd is None or job is None or job.status != JobStatus.RUNNING:
        return False
    if rnd.status != RoundStatus.RUNNING:
        return False
    advance_secure(session, job, rnd)  # a SecAgg round: its stages move on with the results
    if not _round_is_due(session, job, rnd):
        if dispatcher is not None and site is not None:
            dispatcher.send_fold(job_id, round_num, site)
        return False
    if dispatcher is not None:
        dispatcher.send_aggregate(job_id, round_num)
    return True


def advance_secure(
    session: Session, job: Job, rnd: Round, dispatcher: Dispatcher | None = None
) -> SecAggRound | None:
    """Close the stages of a secure-aggregation round that can close now (services/secagg.py);
    the one call that makes it ready sends the aggregate (when given a dispatcher). None for
    a round without SecAgg."""
    row = secagg.state_of(session, job.id, rnd.number)
    if row is None or job.status != JobStatus.RUNNING or rnd.status != RoundStatus.RUNNING:
        return row
    results = _results(session, job.id, rnd.number)
    ready = secagg.advance(session, row, results, lambda: _results_due(session, job, rnd))
    if ready and dispatcher is not None:
        dispatcher.send_aggregate(job.id, rnd.number)
    return secagg.state_of(session, job.id, rnd.number)


def fold_arrived(
    session: Session, store: ArtifactStore, job_id: int, round_num: int, site: str
) -> bool:
    """Fold `site`'s update into its running round now (aggregator: fold task).

    True when this call folded it; False when there is nothing to do: the round or job is no
    longer running, the result is not done, the site was folded already (a redelivered
    message), or the round was taken for aggregation (which folds it itself)."""
    job = session.get(Job, job_id, populate_existing=True)
    rnd = session.scalar(
        select(Round)
        .where(Round.job_id == job_id, Round.number == round_num)
        .execution_options(populate_existing=True)
    )
    res = session.scalar(
        select(SiteResult)
        .where(
            SiteResult.job_id == job_id,
            SiteResult.round_num == round_num,
            SiteResult.site == site,
        )
        .execution_options(populate_existing=True)
    )
    session.commit()
    if job is None or job.status != JobStatus.RUNNING:
        folds.REGISTRY.drop_job(job_id)
        return False
    if rnd is None or rnd.status != RoundStatus.RUNNING or not rnd.weights_key:
        return False
    if res is None or res.status != ResultStatus.DONE:
        return False
    entry = folds.REGISTRY.entry(job_id, round_num, rnd.weights_key)
    if entry is None:
        return False
    began = time.monotonic()
    with entry.lock:
        if entry.closed:
            return False
        if entry.fold is None:
            entry.fold = _open_fold(store, job, rnd)
        if site in entry.fold.seen:
            return False
        reason = entry.fold.fold(_site_update(store, res))
    log.info(
        "folded job %s round %s site %s on arrival in %.3fs%s",
        job_id,
        round_num,
        site,
        time.monotonic() - began,
        f" (refused: {reason})" if reason else "",
    )
    return True


def _round_is_due(session: Session, job: Job, rnd: Round) -> bool:
    """Enough results for the workflow, every expected site has answered, or too few can;
    a secure-aggregation round once its unmask stage closed too."""
    row = secagg.state_of(session, job.id, rnd.number)
    if row is not None:
        return row.stage == secagg.SecAggStage.READY
    return _results_due(session, job, rnd)


def _results_due(session: Session, job: Job, rnd: Round) -> bool:
    """The results rule of `_round_is_due` (a SecAgg round's masked stage closes by it)."""
    results = _results(session, job.id, rnd.number)
    done = sum(r.status == ResultStatus.DONE for r in results)
    pending = sum(r.status in PENDING_RESULT for r in results)
    needed = rnd.min_results
    if needed is None:
        needed = min(job.min_clients, len(results)) if results else job.min_clients
    # the last clause: too few sites can still answer, so aggregating now fails the job
    # with the reason instead of waiting for the deadline
    return done >= needed or pending == 0 or done + pending < needed


# ------------------------------------------------------------------------------ aggregate
def aggregate_round(
    session: Session,
    store: ArtifactStore,
    job_id: int,
    round_num: int,
    dispatcher: Dispatcher,
    *,
    takeover: bool = False,
) -> bool:
    """Aggregate round `round_num` exactly once; returns False if it was not this call's turn.

    A message for a round that is not due yet (too few results, deadline not passed) is
    ignored, so a stray or early aggregate can never close a round short.

    The claim is a conditional UPDATE running -> aggregating (`takeover` also claims a round
    whose aggregator died, see `reconcile`); a second delivery finds nothing to claim.
    """
    began = time.monotonic()
    now = utcnow()
    job = _job(session, job_id)
    current = session.scalar(
        select(Round)
        .where(Round.job_id == job_id, Round.number == round_num)
        .execution_options(populate_existing=True)
    )
    if current is None or (
        current.status == RoundStatus.RUNNING and not _round_is_due(session, job, current)
    ):
        session.commit()
        return False  # early or stray message: results only grow, a due round stays due
    claimable = [RoundStatus.RUNNING] + ([RoundStatus.AGGREGATING] if takeover else [])
    claimed = _changed(
        session,
        update(Round)
        .where(
            Round.job_id == job_id,
            Round.number == round_num,
            Round.status.in_(claimable),
        )
        .values(status=RoundStatus.AGGREGATING, aggregated_at=now),
    )
    session.commit()
    if not claimed:
        return False
    job = _job(session, job_id)
    if job.status != JobStatus.RUNNING:
        _set_round(session, job_id, round_num, RoundStatus.FAILED, f"job is {job.status.value}")
        return False
    try:
        next_sites = _aggregate_claimed(session, store, job, round_num, began)
    except RoundError as exc:
        session.rollback()
        _set_round(session, job_id, round_num, RoundStatus.FAILED, str(exc))
        _fail_job(session, job_id, str(exc))
        return True
    except Exception as exc:
        log.exception("aggregation of job %s round %s failed", job_id, round_num)
        session.rollback()
        reason = f"aggregation of round {round_num} failed: {type(exc).__name__}: {exc}"
        _set_round(session, job_id, round_num, RoundStatus.FAILED, reason)
        _fail_job(session, job_id, reason)
        return True
    for site in next_sites:
        dispatcher.send_train(site, job_id, round_num + 1)
    return True


def _aggregate_claimed(
    session: Session, store: ArtifactStore, job: Job, round_num: int, began: float
) -> list[str]:
    """Fold the round's updates, persist, then open the next round or finish; commits once."""
    # torch-backed FL core: imported here so the API process (which imports this module)
    # never loads torch; only the aggregator runs this
    from resonfl.fl.rounds import AggregatorStateStore, RoundTooSmallError  # lazy: torch
    from resonfl.fl.shareable import save_weights  # lazy: torch
    from resonfl.templates.custom_persistor import PTFileModelPersistor  # lazy: torch

    spec = _load_spec(store, job.id)
    rnd = _round(session, job.id, round_num)
    results = _results(session, job.id, round_num)
    for res in results:
        if res.status in PENDING_RESULT:
            res.status = ResultStatus.FAILED
            res.error = res.error or "no result when the round was aggregated (deadline passed)"
    done = {r.site: r for r in results if r.status == ResultStatus.DONE}
    last = round_num + 1 >= spec.num_rounds
    persistor = PTFileModelPersistor(store.workspace(job.id))
    state = AggregatorStateStore(store.workspace(job.id) / STATE_DIR)
    fold = _taken_fold(job.id, rnd, set(done))
    if fold is None:
        fold = _open_fold(store, job, rnd, spec)
    secure = secagg.state_of(session, job.id, round_num)
    if secure is not None:
        from resonfl.fl.secagg import Transcript  # lazy: torch

        use_transcript = getattr(fold.aggregator, "use_transcript")  # noqa: B009 - SecAgg's
        use_transcript(Transcript(**secagg.transcript(session, secure)))
    try:
        for site in sorted(set(done) - fold.seen):
            fold.fold(_site_update(store, done[site]))
        outcome = fold.close(
            needed=spec.workflow.min_results(round_num, list(job.sites)),
            persistor=persistor,
            state=state,
            final=last,
        )
    except RoundTooSmallError as exc:
        _mark_refused(done, exc.refused)
        errors = "; ".join(f"{r.site}: {r.error}" for r in results if r.error)
        raise RoundError(
            f"round {round_num}: {exc.accepted} usable result(s), {exc.needed} needed "
            f"(min_clients). {errors}".strip()
        ) from None
    _mark_refused(done, outcome.refused)
    accepted = [done[s] for s in outcome.accepted]
    metrics = outcome.metrics
    weights = outcome.weights
    _record_times(rnd, accepted, began)
    rnd.metrics = {k: v for k, v in metrics.items() if len(k) <= 128 and math.isfinite(v)}
    rnd.status = RoundStatus.DONE
    rnd.aggregated_at = utcnow()
    if last or outcome.stopped is not None:
        # a stopped job (its privacy budget spent) ends here: this round's model is the final
        # one (fold_round saved it as model_out/checkpoint.pt) and the reason is on the page
        job.status = JobStatus.FINISHED
        job.finished_at = utcnow()
        if outcome.stopped is not None:
            job.error = f"Stopped early: {outcome.stopped}"
        session.commit()
        return []
    scratch = store.scratch_dir()
    try:
        out = scratch / "global.safetensors"
        digest = save_weights(weights, out)
        return _open_round(session, store, job, spec, round_num + 1, out, digest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _taken_fold(job_id: int, rnd: Round, done: set[str]) -> RoundFold | None:
    """The running fold of this round (folded as updates arrived), if this process has one
    that started from this round's weights and folded only results that are done now."""
    entry = folds.REGISTRY.take(job_id, rnd.number)
    if entry is None or entry.fold is None or entry.weights_key != rnd.weights_key:
        return None
    if not entry.fold.seen <= done:
        return None  # cannot happen (done is final); start over rather than trust it
    return entry.fold


def _open_fold(store: ArtifactStore, job: Job, rnd: Round, spec: _Spec | None = None) -> RoundFold:
    """Open the round's fold: the job's aggregator, its state after round r-1 restored, reset
    to the round's global weights."""
    # torch-backed FL core: imported here so the API process (which imports this module)
    # never loads torch; only the aggregator runs this
    from resonfl.fl.rounds import AggregatorStateStore, RoundFold  # lazy: torch
    from resonfl.fl.shareable import load_weights, read_parameter_names  # lazy: torch

    spec = spec or _load_spec(store, job.id)
    global_path = _verified(store, rnd.weights_key, rnd.weights_sha256, "global weights")
    aggregator = spec.job.build_aggregator()
    if getattr(aggregator, "secure_aggregation", False):
        aggregator.take_masked_uploads()  # sites send masked vectors (services/secagg.py)
    # Round 0's weights (built in the sandbox) name the parameters; later rounds get them back
    # from the aggregator state saved with round r-1 (RoundFold restores it first).
    aggregator.bind_model(read_parameter_names(global_path))
    return RoundFold(
        aggregator,
        load_weights(global_path),
        rnd.number,
        state=AggregatorStateStore(store.workspace(job.id) / STATE_DIR),
    )


def _site_update(store: ArtifactStore, res: SiteResult) -> SiteUpdate:
    """A done result as the round loop sees it: its upload is read (and checked) when folded.

    Its sha256 is not computed again here: the API hashed the bytes as it wrote them into the
    store, where a file appears only whole (temp file + rename) and only the server writes.
    Hashing 4 x 94 MB again was 40 % of a ResNet-50 aggregation (py-spy, bench/rounds.py)."""
    # torch-backed, see _aggregate_claimed
    from resonfl.fl.base import InvalidUpdateError  # lazy: torch
    from resonfl.fl.rounds import SiteUpdate  # lazy: torch
    from resonfl.fl.shareable import load_weights  # lazy: torch

    def load() -> dict[str, Any]:
        path = store.path(res.artifact_key) if res.artifact_key else None
        if path is None or not path.is_file() or not res.sha256:
            raise InvalidUpdateError("the uploaded weights are missing from the store")
        return load_weights(path)

    return SiteUpdate(
        site=res.site, samples=int(res.samples or 0), metrics=res.metrics or {}, load=load
    )


def _mark_refused(done: dict[str, SiteResult], refused: dict[str, str]) -> None:
    for site, reason in refused.items():
        done[site].status = ResultStatus.FAILED
        done[site].error = reason


def _record_times(rnd: Round, accepted: list[SiteResult], began: float) -> None:
    """Round wall time vs. the sites' training time; the rest is the platform's overhead."""
    started = rnd.started_at or utcnow()
    round_s = (utcnow() - started).total_seconds()
    train = {r.site: float(r.train_s or 0.0) for r in accepted}
    total = {r.site: float(r.total_s or 0.0) for r in accepted}
    slowest = max(train.values(), default=0.0)
    rnd.round_s = round(round_s, 3)
    rnd.train_s_max = round(slowest, 3)
    rnd.overhead_s = round(max(round_s - slowest, 0.0), 3)
    # of which: inside the site task but outside training (job process start, imports,
    # weights in/out) vs. between the sites' tasks (queueing, HTTP, aggregation)
    rnd.site_overhead_s = round(max((total[s] - train[s] for s in train), default=0.0), 3)
    rnd.transport_s = round(max(round_s - max(total.values(), default=0.0), 0.0), 3)
    rnd.aggregate_s = round(time.monotonic() - began, 3)


# ------------------------------------------------------------------------------ reconcile
def reconcile(
    session: Session,
    store: ArtifactStore,
    dispatcher: Dispatcher,
    *,
    heartbeat_timeout_s: float = 60.0,
    start_grace_s: float = 30.0,
    now: datetime | None = None,
) -> ReconcileReport:
    """Repair what messages alone cannot: run on aggregator start and then periodically.

    * queued jobs whose start message was lost are started again;
    * rounds past their deadline aggregate with what is in, or the job fails with the reason;
    * a site that went silent mid-round (no heartbeat, or an idle heartbeat while it should be
      training) gets its task once more, then is failed; the round goes on with the others;
    * a round whose results are all in but whose aggregate message was lost is aggregated;
    * a round stuck "aggregating" past the lease (its aggregator died) is taken over.
    """
    now = now or utcnow()
    report = ReconcileReport()
    jobs = session.scalars(
        select(Job).where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING])).order_by(Job.id)
    ).all()
    sites = {s.name: s for s in session.scalars(select(Site)).all()}
    for job in jobs:
        if job.status == JobStatus.QUEUED:
            if awaiting_approval(session, job.id):
                continue  # the sites' operators decide; nothing is lost meanwhile
            if job.created_at < now - timedelta(seconds=start_grace_s):
                dispatcher.send_start(job.id)
                report.started.append(job.id)
            continue
        rnd = session.scalar(
            select(Round).where(Round.job_id == job.id).order_by(Round.number.desc()).limit(1)
        )
        if rnd is None:
            if job.started_at and job.started_at < now - timedelta(seconds=INIT_TIMEOUT_S):
                _fail_job(session, job.id, "the initial model was never built (start timed out)")
                report.failed_jobs.append(job.id)
            continue
        _reconcile_round(
            session, store, dispatcher, job, rnd, sites, heartbeat_timeout_s, now, report
        )
    session.commit()
    return report


def _reconcile_round(
    session: Session,
    store: ArtifactStore,
    dispatcher: Dispatcher,
    job: Job,
    rnd: Round,
    sites: dict[str, Site],
    heartbeat_timeout_s: float,
    now: datetime,
    report: ReconcileReport,
) -> None:
    if rnd.status == RoundStatus.AGGREGATING:
        if rnd.aggregated_at and rnd.aggregated_at < now - timedelta(seconds=AGGREGATE_LEASE_S):
            session.commit()
            aggregate_round(session, store, job.id, rnd.number, dispatcher, takeover=True)
            report.aggregated.append((job.id, rnd.number))
        return
    if rnd.status != RoundStatus.RUNNING:
        return
    if rnd.deadline and rnd.deadline < now:
        for res in _results(session, job.id, rnd.number):
            if res.status in PENDING_RESULT:
                res.status = ResultStatus.FAILED
                res.error = f"no result before the round deadline {rnd.deadline.isoformat()}"
                report.failed_sites.append((job.id, rnd.number, res.site))
        session.commit()
        secure = advance_secure(session, job, rnd)
        if secure is not None and secure.stage != secagg.SecAggStage.READY:
            return  # the survivors' unmask answers are awaited (until the stage's deadline)
        dispatcher.send_aggregate(job.id, rnd.number)  # aggregates or fails with the reason
        report.aggregated.append((job.id, rnd.number))
        return
    _redispatch_silent(session, job, rnd, sites, heartbeat_timeout_s, now, dispatcher, report)
    advance_secure(session, job, rnd)  # stage deadlines of a SecAgg round
    if _round_is_due(session, job, rnd):
        dispatcher.send_aggregate(job.id, rnd.number)
        report.aggregated.append((job.id, rnd.number))


def _redispatch_silent(
    session: Session,
    job: Job,
    rnd: Round,
    sites: dict[str, Site],
    heartbeat_timeout_s: float,
    now: datetime,
    dispatcher: Dispatcher,
    report: ReconcileReport,
) -> None:
    timeout = timedelta(seconds=heartbeat_timeout_s)
    grace = timeout / 3
    counts: dict[str, int] = dict(rnd.redispatched or {})
    resend: list[str] = []
    for res in _results(session, job.id, rnd.number):
        if res.status not in PENDING_RESULT:
            continue
        site = sites.get(res.site)
        beat = site.last_heartbeat if site else None
        dead = (beat is None or beat < now - timeout) and res.updated_at < now - timeout
        # alive and idle well after the task was sent or last reported: the task is lost
        # (e.g. the worker was killed and restarted before its heartbeat went stale)
        lost = (
            site is not None
            and beat is not None
            and beat >= now - timeout
            and site.status == SiteStatus.IDLE
            and res.updated_at < beat - grace
        )
        if not (dead or lost):
            continue
        why = "no heartbeat" if dead else "worker idle, task lost"
        if counts.get(res.site, 0) < MAX_REDISPATCH:
            counts[res.site] = counts.get(res.site, 0) + 1
            res.status = ResultStatus.QUEUED
            res.updated_at = now
            res.error = f"re-dispatched ({why})"
            resend.append(res.site)
            report.redispatched.append((job.id, rnd.number, res.site))
        else:
            res.status = ResultStatus.FAILED
            res.error = f"site went silent mid-round ({why}) after {MAX_REDISPATCH} re-dispatch"
            report.failed_sites.append((job.id, rnd.number, res.site))
    if resend or counts:
        rnd.redispatched = counts
    session.commit()
    for site_name in resend:
        dispatcher.send_train(site_name, job.id, rnd.number)


# ------------------------------------------------------------------------------ cancel
def cancel_job(session: Session, job_id: int, reason: str = "cancelled by user") -> bool:
    """Cancel a queued or running job; results that arrive later are ignored."""
    cancelled = _changed(
        session,
        update(Job)
        .where(Job.id == job_id, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        .values(status=JobStatus.CANCELLED, finished_at=utcnow(), error=reason),
    )
    session.execute(
        update(Round)
        .where(Round.job_id == job_id, Round.status.in_([RoundStatus.PENDING, RoundStatus.RUNNING]))
        .values(status=RoundStatus.FAILED, error=reason)
    )
    session.execute(
        update(SiteResult)
        .where(SiteResult.job_id == job_id, SiteResult.status.in_(PENDING_RESULT))
        .values(status=ResultStatus.FAILED, error=reason)
    )
    session.commit()
    return bool(cancelled)  # sites notice with their next check of the job's state


# ------------------------------------------------------------------------------ helpers
@dataclass
class _Spec:
    """The job folder, loaded: workflow, aggregator class, rounds, timeouts."""

    job_dir: Path
    job: JobSpec
    workflow: Any  # resonfl.fl.base.Workflow
    num_rounds: int
    round_timeout_s: float
    gpus_per_site: int


def _load_spec(store: ArtifactStore, job_id: int) -> _Spec:
    job_dir = store.job_folder(job_id)
    job = _job_spec(str(job_dir), _stamp(job_dir))
    fed = job.federation
    return _Spec(
        job_dir=job_dir,
        job=job,
        workflow=job.build_workflow(),
        num_rounds=fed.num_rounds,
        round_timeout_s=fed.round_timeout_s,
        gpus_per_site=fed.gpus_per_site,
    )


@functools.lru_cache(maxsize=32)
def _job_spec(job_dir: str, stamp: tuple[tuple[str, int, int], ...]) -> JobSpec:
    """The job folder loaded and validated (model_def parsed): once per job and version of
    its files, not once per round (5 % of a ResNet-50 aggregation, py-spy)."""
    return JobSpec.load(Path(job_dir))


def _stamp(job_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """What identifies this version of the job folder's files (name, size, mtime)."""
    return tuple(
        sorted(
            (p.name, st.st_size, st.st_mtime_ns)
            for p in job_dir.iterdir()
            if p.is_file()
            for st in [p.stat()]
        )
    )


def _init_weights(
    job_dir: Path, out: Path, work_dir: Path, timeout_s: float, warm: WarmInit | None
) -> dict[str, float | bool]:
    """Build the initial weights into `out`; where the step's time went (InitPhases)."""
    try:
        return init_global_weights(job_dir, out, work_dir, timeout_s, warm=warm).phases
    except SandboxError as exc:
        raise RoundError(
            f"the initial model could not be built: {exc}\n{exc.log[-2000:]}"
        ) from None


def _check_sites(session: Session, job: Job, spec: _Spec) -> None:
    """Every site is registered, and can meet meta.json's resource spec (GPUs per site)."""
    known = {s.name: s for s in session.scalars(select(Site).where(Site.name.in_(job.sites)))}
    missing = [s for s in job.sites if s not in known]
    if missing:
        raise RoundError(f"sites not registered on this server: {', '.join(missing)}")
    if spec.gpus_per_site <= 0:
        return
    short = [
        f"{name} reported {len(site.gpus or [])} GPU(s)"
        for name, site in known.items()
        if site.last_heartbeat is not None and len(site.gpus or []) < spec.gpus_per_site
    ]
    if short:
        raise RoundError(
            f"meta.json resource_spec asks for {spec.gpus_per_site} GPU(s) per site, but "
            + "; ".join(short)
        )


def _open_round(
    session: Session,
    store: ArtifactStore,
    job: Job,
    spec: _Spec,
    number: int,
    weights: Path,
    sha256: str | None = None,
) -> list[str]:
    """Store the weights entering round `number`, create the round and its results; commit.
    With `sha256` (the writer's hash of a file in the store's scratch) the file is moved in,
    not copied and hashed again."""
    timeout = _secure_stage_timeout(spec)
    vector = secagg.vector_size(weights) if timeout is not None else 0  # before it is moved
    if sha256 is None:
        key, digest, size = store.put_file(weights)
    else:
        key, digest, size = store.adopt(weights, sha256)
    session.add(Artifact(key=key, sha256=digest, size=size, kind="weights", job_id=job.id))
    now = utcnow()
    sites = spec.workflow.sites_for_round(number, list(job.sites))
    needed = spec.workflow.min_results(number, list(job.sites))
    session.add(
        Round(
            job_id=job.id,
            number=number,
            status=RoundStatus.RUNNING,
            weights_key=key,
            weights_sha256=digest,
            started_at=now,
            deadline=now + timedelta(seconds=spec.round_timeout_s),
            min_results=needed,
        )
    )
    for site in sites:
        session.add(SiteResult(job_id=job.id, round_num=number, site=site))
    if timeout is not None:  # its stages go through the API: services/secagg.py
        secagg.open_round(session, job.id, number, vector, timeout)
    job.current_round = number
    session.commit()
    return sites


def _secure_stage_timeout(spec: _Spec) -> float | None:
    """A secure-aggregation job's stage timeout (its aggregator's `stage_timeout_s`), else None."""
    from resonfl.fl.base import Aggregator, resolve_class  # lazy: torch (aggregator only)

    fed = spec.job.federation
    cls = cast("type[Aggregator]", resolve_class(fed.aggregator_path, Aggregator))
    if not getattr(cls, "secure_aggregation", False):
        return None
    args = cls.Args.model_validate(fed.aggregator_args)
    return float(getattr(args, "stage_timeout_s"))  # noqa: B009 - SecAggArgs


def _verified(store: ArtifactStore, key: str | None, sha256: str | None, what: str) -> Path:
    """The artifact's file; its hash was taken when the server wrote it (see _site_update)."""
    if not key or not sha256:
        raise RoundError(f"{what}: no artifact recorded")
    path = store.path(key)
    if not path.is_file():
        raise RoundError(f"{what}: artifact {key} is missing from the store")
    return path


def fail_job(session: Session, job_id: int, reason: str) -> None:
    """Fail a queued or running job with `reason` (e.g. a site's rejection); committed."""
    _fail_job(session, job_id, reason)


def changed(session: Session, statement: Executable) -> int:
    """Rows an UPDATE changed (a conditional UPDATE wins a claim exactly once)."""
    return _changed(session, statement)


def _changed(session: Session, statement: Executable) -> int:
    """Rows an UPDATE changed: the conditional UPDATE is how a claim is won exactly once."""
    return cast("CursorResult[Any]", session.execute(statement)).rowcount


def _job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise RoundError(f"job {job_id} not found")
    return job


def _round(session: Session, job_id: int, number: int) -> Round:
    rnd = session.scalar(
        select(Round)
        .where(Round.job_id == job_id, Round.number == number)
        .execution_options(populate_existing=True)
    )
    if rnd is None:
        raise RoundError(f"job {job_id} has no round {number}")
    return rnd


def _results(session: Session, job_id: int, number: int) -> list[SiteResult]:
    return list(
        session.scalars(
            select(SiteResult)
            .where(SiteResult.job_id == job_id, SiteResult.round_num == number)
            .order_by(SiteResult.site)
            .execution_options(populate_existing=True)
        )
    )


def _set_round(
    session: Session, job_id: int, number: int, status: RoundStatus, error: str | None
) -> None:
    session.execute(
        update(Round)
        .where(Round.job_id == job_id, Round.number == number)
        .values(status=status, error=error)
    )
    session.commit()


def _fail_job(session: Session, job_id: int, reason: str) -> None:
    log.warning("job %s failed: %s", job_id, reason)
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        .values(status=JobStatus.FAILED, finished_at=utcnow(), error=reason[:20000])
    )
    session.commit()
