"""What site workers do through the API: fetch the bundle, shard and weights of a job they
take part in, report progress, upload their update.

`get_job_for_site` is the single scope check: a site token reaches only jobs whose sites
include that site.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from resonfl_server.backend.models import (
    INT_MAX,
    Artifact,
    DecisionStatus,
    Job,
    JobStatus,
    ResultStatus,
    Round,
    RoundStatus,
    Site,
    SiteResult,
    User,
)
from resonfl_server.backend.services import rounds, secagg
from resonfl_server.backend.services.archives import tree, write_zip
from resonfl_server.backend.services.dispatch import Dispatcher
from resonfl_server.backend.services.errors import (
    Conflict,
    Forbidden,
    InvalidSubmission,
    NotFound,
    PayloadTooLarge,
)
from resonfl_server.backend.services.reports import SiteReport
from resonfl_server.backend.services.submissions import is_safetensors
from resonfl_server.backend.storage import ArtifactStore, ArtifactTooLarge
from resonfl.job import SHARDS_DIR


def get_job_for_site(session: Session, site: Site, job_id: int) -> Job:
    if not 0 < job_id <= INT_MAX:  # no such row can exist; the database would overflow
        raise NotFound(f"job {job_id} not found")
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    if site.name not in job.sites:
        raise Forbidden(f"site {site.name!r} does not take part in job {job_id}")
    return job


def submitter_of(session: Session, job: Job) -> str:
    owner = session.get(User, job.owner_id)
    return owner.email if owner else ""


def dataset_of(job: Job) -> str | None:
    """The site dataset the job trains on (meta.json `datasets`: one name for every site)."""
    names = sorted(set(((job.config or {}).get("meta") or {}).get("datasets", {}).values()))
    return str(names[0]) if names else None


def approved_by(job: Job) -> list[str]:
    return [d.site for d in job.decisions if d.status == DecisionStatus.APPROVED]


def build_bundle(session: Session, store: ArtifactStore, site: Site, job_id: int) -> Path:
    """A zip of the job folder with this site's shard only; the caller deletes the file."""
    job = get_job_for_site(session, site, job_id)
    folder = store.job_folder(job.id)
    entries = [
        (path, name)
        for path, name in tree(folder)
        if not name.startswith(f"{SHARDS_DIR}/") or name.startswith(f"{SHARDS_DIR}/{site.name}/")
    ]
    scratch = store.scratch_dir()
    return write_zip(scratch / f"job-{job.id}-{site.name}.zip", entries)


def shard_key(session: Session, site: Site, job_id: int) -> str:
    job = get_job_for_site(session, site, job_id)
    key = (job.attachments or {}).get("shards", {}).get(site.name)
    if key is None:
        raise NotFound(f"job {job_id} has no shard for site {site.name!r}")
    return str(key)


def round_weights(session: Session, site: Site, job_id: int, round_num: int) -> Round:
    """The round whose entering global weights the site fetches."""
    job = get_job_for_site(session, site, job_id)
    rnd = _round(session, job.id, round_num)
    if rnd is None or rnd.weights_key is None:
        raise NotFound(f"job {job_id}: global weights for round {round_num} are not ready")
    return rnd


def record_environment(
    session: Session, store: ArtifactStore, site: Site, job_id: int, report: dict[str, object]
) -> None:
    """Keep what the site installed for the job (shown per site on the job page)."""
    job = get_job_for_site(session, site, job_id)
    path = store.environment_report(job.id, site.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(report), "utf-8")
    tmp.replace(path)


def read_environments(store: ArtifactStore, job: Job) -> dict[str, dict[str, object]]:
    """site -> its environment report, for the sites that sent one."""
    out = {}
    for site in job.sites:
        path = store.environment_report(job.id, site)
        if path.is_file():
            out[site] = json.loads(path.read_text("utf-8"))
    return out


def set_state(
    session: Session,
    store: ArtifactStore,
    site: Site,
    job_id: int,
    round_num: int,
    state: str,
    error: str | None,
    log: str | None,
    dispatcher: Dispatcher,
    sandbox: dict[str, Any] | None = None,
) -> SiteResult:
    """Record a site's progress; a failure is handed to the round state machine. Only a round
    the job has opened takes reports (no rows for rounds that do not exist)."""
    job = get_job_for_site(session, site, job_id)
    if _round(session, job.id, round_num) is None:
        raise NotFound(f"job {job_id} has no round {round_num}")
    result = _result_row(session, job.id, round_num, site.name)
    if result.status == ResultStatus.DONE:
        raise Conflict(f"site {site.name!r} already delivered round {round_num}")
    if (
        result.status == ResultStatus.FAILED
        and state != "failed"
        and _left_out(session, job, round_num)
    ):
        raise Conflict(f"site {site.name!r} is out of round {round_num}: {result.error}")
    if log is not None:
        result.log_key = _put_log(session, store, job.id, log)
    if sandbox is not None:  # the confinement job code ran under, kept for a failed round too
        result.sandbox = sandbox
    result.status = ResultStatus(state)
    result.error = error if state == "failed" else None
    session.flush()
    if result.status != ResultStatus.FAILED:
        session.commit()
        return result
    _hand_over(session, job.id, round_num, dispatcher)
    return result


def _left_out(session: Session, job: Job, round_num: int) -> bool:
    """A failed result of a secure-aggregation round stays failed: the site missed a stage."""
    return secagg.state_of(session, job.id, round_num) is not None


# -- secure aggregation's stages (services/secagg.py) -------------------------------------
def secagg_view(
    session: Session, site: Site, job_id: int, round_num: int, dispatcher: Dispatcher
) -> dict[str, Any]:
    """The round's secure-aggregation stage as `site` may see it, after closing whatever
    stage can close now (a deadline passed, the last message came)."""
    job, rnd, result = _secure_round(session, site, job_id, round_num)
    row = rounds.advance_secure(session, job, rnd, dispatcher)
    assert row is not None
    out = secagg.view(session, row, site.name)
    out["round_status"] = _round(session, job.id, round_num).status.value  # type: ignore[union-attr]
    out["job_status"] = job.status.value
    out["result_status"] = result.status.value
    return out


def secagg_post(
    session: Session,
    site: Site,
    job_id: int,
    round_num: int,
    kind: str,
    body: dict[str, Any],
    dispatcher: Dispatcher,
) -> dict[str, Any]:
    """Take `site`'s message of stage `kind` (keys, shares, unmask), then advance the round."""
    job, rnd, result = _secure_round(session, site, job_id, round_num)
    row = rounds.advance_secure(session, job, rnd, dispatcher)
    assert row is not None
    if job.status != JobStatus.RUNNING or rnd.status != RoundStatus.RUNNING:
        raise Conflict(
            f"job {job_id} round {round_num} is over; secure-aggregation messages are not taken"
        )
    secagg.post(session, row, result, kind, body)
    return secagg_view(session, site, job_id, round_num, dispatcher)


def _secure_round(
    session: Session, site: Site, job_id: int, round_num: int
) -> tuple[Job, Round, SiteResult]:
    job = get_job_for_site(session, site, job_id)
    rnd = _round(session, job.id, round_num)
    if rnd is None or secagg.state_of(session, job.id, round_num) is None:
        raise NotFound(f"job {job_id} round {round_num} has no secure aggregation")
    result = session.scalar(_result_query(job.id, round_num, site.name))
    if result is None:
        raise Forbidden(f"site {site.name!r} is not asked to train round {round_num}")
    return job, rnd, result


Stored = tuple[str, str, int]  # (artifact key, sha256, size) of weights already in the store


def submit_result(
    session: Session,
    store: ArtifactStore,
    site: Site,
    job_id: int,
    round_num: int,
    weights: BinaryIO | Stored,
    meta: dict[str, object],
    dispatcher: Dispatcher,
    max_bytes: int,
) -> tuple[SiteResult, bool]:
    """Store and check an uploaded update, then hand it to the round state machine.

    `weights` is a file to store, or an artifact the route already streamed into the store
    (hashed as it arrived); that one is deleted again when the update is refused.
    Returns (result, duplicate): posting the same update twice is a no-op."""
    try:
        result, report = _record(session, store, site, job_id, round_num, weights, meta, max_bytes)
    except BaseException:
        if isinstance(weights, tuple):
            store.delete(weights[0])
        raise
    if report is None:
        return result, True
    _hand_over(session, job_id, round_num, dispatcher, site.name)
    return result, False


def _record(
    session: Session,
    store: ArtifactStore,
    site: Site,
    job_id: int,
    round_num: int,
    weights: BinaryIO | Stored,
    meta: dict[str, object],
    max_bytes: int,
) -> tuple[SiteResult, SiteReport | None]:
    """Check and record the update (flushed, not committed); no report for a duplicate."""
    job = get_job_for_site(session, site, job_id)
    declared = str(meta["sha256"])
    if _round(session, job.id, round_num) is None:
        raise Conflict(f"job {job.id} round {round_num} is not started; results are not accepted")
    existing = session.scalar(_result_query(job.id, round_num, site.name))
    if existing is not None and existing.status == ResultStatus.DONE:
        if existing.sha256 == declared:
            if isinstance(weights, tuple):
                store.delete(weights[0])  # the retried upload's copy: the first one is kept
            return existing, None
        raise Conflict(
            f"site {site.name!r} already delivered a different update for round {round_num}"
        )
    _check_open(session, job, round_num)
    if isinstance(weights, tuple):
        key, digest, size = weights
    else:
        try:
            # an update lost in a power cut is sent again by its site: no fsync needed
            key, digest, size = store.put(weights, max_bytes=max_bytes, durable=False)
        except ArtifactTooLarge as exc:
            raise PayloadTooLarge(f"weights: {exc}") from None
    try:
        if digest != declared:
            raise InvalidSubmission(
                "weights", "sha256", f"upload hashes to {digest}, the request declared {declared}"
            )
        if not is_safetensors(store.path(key)):
            raise InvalidSubmission("weights", "", "not a safetensors file")
        secure = secagg.state_of(session, job.id, round_num)
        if secure is not None:  # a masked vector, from a site that shared, in its stage
            secagg.check_upload(secure, site.name, store.path(key))
        session.add(Artifact(key=key, sha256=digest, size=size, kind="update", job_id=job.id))
        result = _result_row(session, job.id, round_num, site.name)
        log = meta.get("log")
        if isinstance(log, str):
            result.log_key = _put_log(session, store, job.id, log)
        report = SiteReport(
            status=ResultStatus.DONE,
            samples=int(meta["samples"]),  # type: ignore[call-overload]
            metrics=dict(meta.get("metrics") or {}),  # type: ignore[call-overload]
            artifact_key=key,
            sha256=digest,
            train_s=_float(meta.get("train_s")),
            total_s=_float(meta.get("total_s")),
            log_key=result.log_key,
            phases=_object(meta.get("phases")),
            sandbox=_object(meta.get("sandbox")),
        )
        _apply(result, report)
        session.flush()
    except BaseException:
        session.rollback()
        store.delete(key)
        raise
    return result, report


# -- helpers -----------------------------------------------------------------------------
def _hand_over(
    session: Session,
    job_id: int,
    round_num: int,
    dispatcher: Dispatcher,
    done_site: str | None = None,
) -> None:
    rounds.record_result(session, job_id, round_num, dispatcher, site=done_site)
    session.commit()  # a no-op when record_result committed already


def _apply(result: SiteResult, report: SiteReport) -> None:
    result.status = report.status
    result.samples = report.samples
    result.metrics = report.metrics
    result.artifact_key = report.artifact_key
    result.sha256 = report.sha256
    result.train_s = report.train_s
    result.total_s = report.total_s
    result.error = report.error
    result.phases = report.phases
    result.sandbox = report.sandbox


def _object(value: object) -> dict[str, Any] | None:
    """A validated sub-object of the meta (model_dump'ed), without its unset fields."""
    if not isinstance(value, dict):
        return None
    return {k: v for k, v in value.items() if v is not None}


def _check_open(session: Session, job: Job, round_num: int) -> None:
    if job.status != JobStatus.RUNNING:
        raise Conflict(f"job {job.id} is {job.status.value}; results are not accepted")
    rnd = _round(session, job.id, round_num)
    if rnd is None or rnd.status != RoundStatus.RUNNING:
        state = "not started" if rnd is None else rnd.status.value
        raise Conflict(f"job {job.id} round {round_num} is {state}; results are not accepted")


def _round(session: Session, job_id: int, round_num: int) -> Round | None:
    if not 0 <= round_num <= INT_MAX:
        return None
    return session.scalar(select(Round).where(Round.job_id == job_id, Round.number == round_num))


def _result_query(job_id: int, round_num: int, site: str):  # type: ignore[no-untyped-def]
    return select(SiteResult).where(
        SiteResult.job_id == job_id, SiteResult.round_num == round_num, SiteResult.site == site
    )


def _result_row(session: Session, job_id: int, round_num: int, site: str) -> SiteResult:
    row = session.scalar(_result_query(job_id, round_num, site))
    if row is None:
        row = SiteResult(job_id=job_id, round_num=round_num, site=site, metrics={})
        session.add(row)
    return row


def _put_log(session: Session, store: ArtifactStore, job_id: int, text: str) -> str:
    key, digest, size = store.put_bytes(text.encode("utf-8", errors="replace"))
    session.add(Artifact(key=key, sha256=digest, size=size, kind="log", job_id=job_id))
    return key


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def remove_file(path: Path) -> None:
    """Background cleanup for streamed temp files (bundles)."""
    shutil.rmtree(path.parent, ignore_errors=True)
