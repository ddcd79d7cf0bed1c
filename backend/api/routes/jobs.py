"""Jobs: submit, list, read, cancel, logs, downloads. Ownership is checked in
services.jobs.get_job_for, never here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile, status
from fastapi.responses import FileResponse, Response

from resonfl_server.backend.api.deps import (
    CurrentUser,
    DispatcherDep,
    JobId,
    RoundNum,
    SessionDep,
    SettingsDep,
    Skip,
    StoreDep,
)
from resonfl_server.backend.models import Job
from resonfl_server.backend.schemas.jobs import (
    JobDetail,
    JobLogs,
    JobPublic,
    JobsPublic,
    RoundPublic,
    RoundTimes,
    SiteLog,
    SiteResultPublic,
    TwinCurvePublic,
    TwinPublic,
)
from resonfl_server.backend.schemas.sites import SiteDecisionPublic, SiteEnvironmentPublic
from resonfl_server.backend.services import jobs as job_service
from resonfl_server.backend.services import tracking, twins
from resonfl_server.backend.services.errors import Conflict, NotFound
from resonfl_server.backend.services.site_api import read_environments
from resonfl_server.backend.storage import ArtifactStore
from resonfl_server.backend.services.submissions import Submission, Upload
from resonfl_server.backend.services.submissions import create_job as submit_job

router = APIRouter(prefix="/jobs", tags=["jobs"])

OptionalFile = Annotated[UploadFile | None, File()]


def _upload(file: UploadFile | None) -> Upload | None:
    return Upload(file.filename or "", file.file) if file is not None else None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobDetail)
def create_job(
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    dispatcher: DispatcherDep,
    user: CurrentUser,
    model_def: Annotated[UploadFile | None, File(alias="model_def.py")] = None,
    custom_client_executor: Annotated[
        UploadFile | None, File(alias="custom_client_executor.py")
    ] = None,
    custom_persistor: Annotated[UploadFile | None, File(alias="custom_persistor.py")] = None,
    config_fed_client: Annotated[UploadFile | None, File(alias="config_fed_client.json")] = None,
    config_fed_server: Annotated[UploadFile | None, File(alias="config_fed_server.json")] = None,
    meta: Annotated[UploadFile | None, File(alias="meta.json")] = None,
    job_zip: OptionalFile = None,
    shards: Annotated[list[UploadFile] | None, File()] = None,
    requirements: Annotated[UploadFile | None, File(alias="requirements.txt")] = None,
    checkpoint: OptionalFile = None,
) -> JobDetail:
    """Submit a job: the six files (each under its file name) and/or `job_zip` (a zip of a
    job folder), plus optional `shards` (zip per site named `<site>.zip`, or zips holding
    `shards/<site>/`), `requirements.txt` and a warm-start `checkpoint` (safetensors or a
    torch file loadable with weights_only=True). Validated exactly like the SDK's
    `Job.load`; a 422 names the file and field at fault."""
    six = {
        "model_def.py": model_def,
        "custom_client_executor.py": custom_client_executor,
        "custom_persistor.py": custom_persistor,
        "config_fed_client.json": config_fed_client,
        "config_fed_server.json": config_fed_server,
        "meta.json": meta,
    }
    submission = Submission(
        files={name: Upload(name, f.file) for name, f in six.items() if f is not None},
        job_zip=_upload(job_zip),
        shards=[Upload(f.filename or "", f.file) for f in shards or []],
        requirements=_upload(requirements),
        checkpoint=_upload(checkpoint),
    )
    job = submit_job(session, store, user, submission, dispatcher, settings.max_upload_bytes)
    return job_detail(job_service.get_job_for(session, user, job.id))


@router.get("", response_model=JobsPublic)
def read_jobs(
    session: SessionDep,
    user: CurrentUser,
    skip: Skip = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobsPublic:
    jobs, count = job_service.list_jobs(session, user, skip, limit)
    return JobsPublic(data=[JobPublic.model_validate(j) for j in jobs], count=count)


@router.get("/{job_id}", response_model=JobDetail)
def read_job(job_id: JobId, session: SessionDep, store: StoreDep, user: CurrentUser) -> JobDetail:
    """A job with its rounds, each site's result (status, samples, metrics, timings) and what
    each site installed for its requirements."""
    return job_detail(job_service.get_job_for(session, user, job_id), store)


@router.post("/{job_id}/twin", response_model=JobPublic, status_code=status.HTTP_201_CREATED)
def create_job_twin(
    job_id: JobId, session: SessionDep, store: StoreDep, user: CurrentUser, dispatcher: DispatcherDep
) -> JobPublic:
    """Run the job's recipe centrally on its pooled training shards on one site worker (same
    total optimizer steps, seed and evaluation set). 409 with the reason when the server does
    not hold the job's data."""
    twin = twins.create_twin(session, store, user, job_id, dispatcher)
    return JobPublic.model_validate(twin)


@router.get("/{job_id}/twin", response_model=TwinPublic)
def read_job_twin(
    job_id: JobId, session: SessionDep, store: StoreDep, user: CurrentUser
) -> TwinPublic:
    """FL vs centralized: both curves per metric, the gap and the share of it closed per
    round. 404 before a twin was started; 409 with the reason when none can run."""
    job = job_service.get_job_for(session, user, job_id)
    twin = twins.latest_twin(session, job)
    if twin is None:
        reason = twins.twin_unavailable(store, job)
        if reason:
            raise Conflict(reason)
        raise NotFound(f"job {job_id} has no centralized twin yet (POST .../twin starts one)")
    return twin_public(twins.compare(job, twin))


def twin_public(cmp: twins.TwinComparison) -> TwinPublic:
    return TwinPublic(
        job_id=cmp.job_id,
        twin_id=cmp.twin_id,
        twin_status=cmp.twin_status,
        site=cmp.site,
        steps_per_round=cmp.steps_per_round,
        curves=[TwinCurvePublic(**vars(c)) for c in cmp.curves],
    )


@router.get(
    "/{job_id}/tensorboard",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
)
def download_tensorboard(
    job_id: JobId, session: SessionDep, store: StoreDep, user: CurrentUser
) -> Response:
    """The job's TensorBoard event files (global and per site, written as rounds finish) as
    a zip; 404 before its first round finished."""
    job = job_service.get_job_for(session, user, job_id)
    data = tracking.events_zip(store, job.id)
    if data is None:
        raise NotFound(f"job {job_id} has no finished round yet, so no TensorBoard events")
    name = f"job-{job.id}-tensorboard.zip"
    return Response(
        data, media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )  # fmt: skip


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: JobId, session: SessionDep, user: CurrentUser) -> JobPublic:
    return JobPublic.model_validate(job_service.cancel_job(session, user, job_id))


@router.get("/{job_id}/logs", response_model=JobLogs)
def read_job_logs(
    job_id: JobId,
    session: SessionDep,
    store: StoreDep,
    user: CurrentUser,
    site: str | None = None,
) -> JobLogs:
    """Each site's captured job output, per round."""
    logs = job_service.job_logs(session, store, user, job_id, site)
    return JobLogs(
        job_id=job_id,
        sites={
            name: [
                SiteLog(round=r.round_num, status=r.status, error=r.error, log=text)
                for r, text in entries
            ]
            for name, entries in logs.items()
        },
    )


@router.get("/{job_id}/download", response_class=FileResponse)
def download_job_model(
    job_id: JobId, session: SessionDep, store: StoreDep, user: CurrentUser
) -> FileResponse:
    """The final global model, model_out/checkpoint.pt."""
    path = job_service.model_file(session, store, user, job_id)
    return FileResponse(path, filename=f"job-{job_id}-checkpoint.pt")


@router.get("/{job_id}/rounds/{round_num}/download", response_class=FileResponse)
def download_round_model(
    job_id: JobId, round_num: RoundNum, session: SessionDep, store: StoreDep, user: CurrentUser
) -> FileResponse:
    """The global model after round N, files_out/GLOBAL_MODEL_round_N.pt."""
    path = job_service.model_file(session, store, user, job_id, round_num)
    return FileResponse(path, filename=f"job-{job_id}-GLOBAL_MODEL_round_{round_num}.pt")


def job_detail(job: Job, store: ArtifactStore | None = None) -> JobDetail:
    by_round: dict[int, list[SiteResultPublic]] = {}
    for result in job.results:
        by_round.setdefault(result.round_num, []).append(SiteResultPublic.model_validate(result))
    rounds = []
    for rnd in job.rounds:
        public = RoundPublic.model_validate(rnd)
        public.timings = RoundTimes.of(rnd)
        public.results = by_round.get(rnd.number, [])
        rounds.append(public)
    return JobDetail(
        **JobPublic.model_validate(job).model_dump(),
        config=job.config,
        files=sorted(job.files),
        attachments=job.attachments,
        rounds=rounds,
        environments=[
            SiteEnvironmentPublic(site=site, **report)
            for site, report in (read_environments(store, job) if store else {}).items()
        ],
        decisions=[SiteDecisionPublic.model_validate(d) for d in job.decisions],
    )
