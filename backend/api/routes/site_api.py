"""Endpoints for site workers (site token). Scope is checked in
services.site_api.get_job_for_site, never here."""

from __future__ import annotations

from typing import BinaryIO

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile as StarletteUpload

from resonfl_server.backend.api.deps import (
    CurrentSite,
    DispatcherDep,
    JobId,
    RoundNum,
    SessionDep,
    SettingsDep,
    StoreDep,
)
from resonfl_server.backend.schemas.sites import (
    DecisionIn,
    HeartbeatIn,
    HeartbeatOut,
    ResultAccepted,
    ResultMeta,
    SecAggKeysIn,
    SecAggSharesIn,
    SecAggStatePublic,
    SecAggUnmaskIn,
    SiteEnvironmentIn,
    SiteApprovalPublic,
    SiteApprovalsPublic,
    SiteDecisionPublic,
    SiteJobFiles,
    SiteJobPublic,
    SiteStateIn,
)
from resonfl_server.backend.services import accounts, approvals, site_api
from resonfl_server.backend.services.errors import InvalidSubmission, PayloadTooLarge
from resonfl_server.backend.storage import ArtifactStore, ArtifactTooLarge

router = APIRouter(prefix="/site", tags=["site"])


class WeightsResponse(FileResponse):
    """A file sent in 1 MiB reads instead of Starlette's 64 KiB: each read is a thread hop,
    and a ResNet-50's weights would take ~1,500 of them per site and round."""

    chunk_size = 1 << 20


ZIP = "application/zip"


@router.post("/status", response_model=HeartbeatOut)
def update_site_status(body: HeartbeatIn, session: SessionDep, site: CurrentSite) -> HeartbeatOut:
    """Heartbeat: the worker is alive, idle or busy, sees these GPUs, holds these datasets
    (counts only) and runs jobs under this policy."""
    site = accounts.heartbeat(
        session,
        site,
        body.status,
        body.gpus,
        [d.model_dump() for d in body.datasets],
        body.policy.model_dump(),
    )
    assert site.last_heartbeat is not None
    return HeartbeatOut(site=site.name, server_time=site.last_heartbeat)


@router.get("/jobs/{job_id}", response_model=SiteJobPublic)
def read_site_job(job_id: JobId, session: SessionDep, site: CurrentSite) -> SiteJobPublic:
    job = site_api.get_job_for_site(session, site, job_id)
    return SiteJobPublic(
        id=job.id,
        name=job.name,
        status=job.status.value,
        num_rounds=job.num_rounds,
        current_round=job.current_round,
        sites=job.sites,
        min_clients=job.min_clients,
        submitter=site_api.submitter_of(session, job),
        dataset=site_api.dataset_of(job),
        approved_by=site_api.approved_by(job),
    )


@router.get("/jobs/{job_id}/files", response_model=SiteJobFiles)
def read_site_job_files(job_id: JobId, session: SessionDep, site: CurrentSite) -> SiteJobFiles:
    """The job's six files and its submitter: what the operator reads before deciding."""
    job = site_api.get_job_for_site(session, site, job_id)
    submitter = site_api.submitter_of(session, job)
    return SiteJobFiles(id=job.id, name=job.name, submitter=submitter, files=dict(job.files))


@router.get("/approvals", response_model=SiteApprovalsPublic)
def read_site_approvals(
    session: SessionDep, site: CurrentSite, include_decided: bool = False
) -> SiteApprovalsPublic:
    """Jobs awaiting this site's decision (`include_decided`: also those it decided)."""
    data = [
        SiteApprovalPublic(
            job_id=job.id,
            name=job.name,
            submitter=submitter,
            submitted_at=job.created_at,
            job_status=job.status.value,
            sites=job.sites,
            dataset=site_api.dataset_of(job),
            decision=SiteDecisionPublic.model_validate(decision),
        )
        for job, decision, submitter in approvals.for_site(session, site, include_decided)
    ]
    return SiteApprovalsPublic(data=data, count=len(data))


@router.post("/jobs/{job_id}/approve", response_model=SiteDecisionPublic)
def approve_site_job(
    job_id: JobId,
    body: DecisionIn,
    session: SessionDep,
    site: CurrentSite,
    dispatcher: DispatcherDep,
) -> SiteDecisionPublic:
    """The site's operator approves the job; the last approval starts it."""
    row = approvals.decide(session, site, job_id, True, body.operator, body.reason, dispatcher)
    return SiteDecisionPublic.model_validate(row)


@router.post("/jobs/{job_id}/reject", response_model=SiteDecisionPublic)
def reject_site_job(
    job_id: JobId,
    body: DecisionIn,
    session: SessionDep,
    site: CurrentSite,
    dispatcher: DispatcherDep,
) -> SiteDecisionPublic:
    """The site's operator rejects the job: it fails with the site's reason."""
    row = approvals.decide(session, site, job_id, False, body.operator, body.reason, dispatcher)
    return SiteDecisionPublic.model_validate(row)


@router.get("/jobs/{job_id}/bundle", response_class=FileResponse)
def read_job_bundle(
    job_id: JobId, session: SessionDep, store: StoreDep, site: CurrentSite, tasks: BackgroundTasks
) -> FileResponse:
    """The job folder as a zip, with this site's shard and no other site's."""
    path = site_api.build_bundle(session, store, site, job_id)
    tasks.add_task(site_api.remove_file, path)
    return FileResponse(path, media_type=ZIP, filename=path.name)


@router.get("/jobs/{job_id}/shard", response_class=FileResponse)
def read_job_shard(
    job_id: JobId, session: SessionDep, store: StoreDep, site: CurrentSite
) -> FileResponse:
    """This site's data shard as a zip."""
    key = site_api.shard_key(session, site, job_id)
    return FileResponse(store.path(key), media_type=ZIP, filename=f"{site.name}.zip")


@router.get("/jobs/{job_id}/rounds/{round_num}/weights", response_class=WeightsResponse)
def read_round_weights(
    job_id: JobId, round_num: RoundNum, session: SessionDep, store: StoreDep, site: CurrentSite
) -> FileResponse:
    """The global weights entering round N (safetensors); `X-Content-SHA256` is their hash."""
    rnd = site_api.round_weights(session, site, job_id, round_num)
    assert rnd.weights_key is not None and rnd.weights_sha256 is not None
    return WeightsResponse(
        store.path(rnd.weights_key),
        media_type="application/octet-stream",
        filename=f"job-{job_id}-round-{round_num}.safetensors",
        headers={"X-Content-SHA256": rnd.weights_sha256},
    )


@router.post("/jobs/{job_id}/rounds/{round_num}/state", status_code=204)
def update_round_state(
    job_id: JobId,
    round_num: RoundNum,
    body: SiteStateIn,
    session: SessionDep,
    store: StoreDep,
    site: CurrentSite,
    dispatcher: DispatcherDep,
) -> None:
    """Progress of this site in a round; `failed` (with `error`) ends its part in it."""
    sandbox = body.sandbox.model_dump() if body.sandbox is not None else None
    site_api.set_state(
        session, store, site, job_id, round_num, body.state, body.error, body.log, dispatcher,
        sandbox=sandbox,
    )  # fmt: skip


@router.post("/jobs/{job_id}/environment", status_code=204)
def update_job_environment(
    job_id: JobId, body: SiteEnvironmentIn, session: SessionDep, store: StoreDep, site: CurrentSite
) -> None:
    """What this site installed for the job's requirements.txt and how long it took."""
    site_api.record_environment(session, store, site, job_id, body.model_dump())


SECAGG = "/jobs/{job_id}/rounds/{round_num}/secagg"


@router.get(SECAGG, response_model=SecAggStatePublic)
def read_secagg_state(
    job_id: JobId,
    round_num: RoundNum,
    session: SessionDep,
    site: CurrentSite,
    dispatcher: DispatcherDep,
) -> SecAggStatePublic:
    """A secure-aggregation round's stage and what this site may read of it: everyone's
    public keys once the key exchange closed, the shares addressed to it once the share
    stage closed, survivors and dropped sites once the uploads are in."""
    view = site_api.secagg_view(session, site, job_id, round_num, dispatcher)
    return SecAggStatePublic.model_validate(view)


@router.post(SECAGG + "/keys", response_model=SecAggStatePublic)
def create_secagg_keys(
    job_id: JobId,
    round_num: RoundNum,
    body: SecAggKeysIn,
    session: SessionDep,
    site: CurrentSite,
    dispatcher: DispatcherDep,
) -> SecAggStatePublic:
    """Stage 1: this site's public keys (may be replaced while the stage is open)."""
    view = site_api.secagg_post(
        session, site, job_id, round_num, "keys", body.model_dump(), dispatcher
    )
    return SecAggStatePublic.model_validate(view)


@router.post(SECAGG + "/shares", response_model=SecAggStatePublic)
def create_secagg_shares(
    job_id: JobId,
    round_num: RoundNum,
    body: SecAggSharesIn,
    session: SessionDep,
    site: CurrentSite,
    dispatcher: DispatcherDep,
) -> SecAggStatePublic:
    """Stage 2: the encrypted shares for each neighbour (once)."""
    view = site_api.secagg_post(
        session, site, job_id, round_num, "shares", body.model_dump(), dispatcher
    )
    return SecAggStatePublic.model_validate(view)


@router.post(SECAGG + "/unmask", response_model=SecAggStatePublic)
def create_secagg_unmask(
    job_id: JobId,
    round_num: RoundNum,
    body: SecAggUnmaskIn,
    session: SessionDep,
    site: CurrentSite,
    dispatcher: DispatcherDep,
) -> SecAggStatePublic:
    """Stage 4: a survivor's shares that remove the masks (once)."""
    view = site_api.secagg_post(
        session, site, job_id, round_num, "unmask", body.model_dump(), dispatcher
    )
    return SecAggStatePublic.model_validate(view)


RESULT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "the weights (safetensors) as the body, streamed to disk and "
                "hashed as they arrive; the ResultMeta JSON in the X-Result-Meta header",
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["weights", "meta"],
                    "properties": {
                        "weights": {"type": "string", "format": "binary"},
                        "meta": {"type": "string", "description": "JSON: ResultMeta"},
                    },
                }
            },
        },
    }
}
META_HEADER = "x-result-meta"


@router.post(
    "/jobs/{job_id}/rounds/{round_num}/result",
    response_model=ResultAccepted,
    openapi_extra=RESULT_BODY,
)
async def create_round_result(
    job_id: JobId,
    round_num: RoundNum,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    site: CurrentSite,
    dispatcher: DispatcherDep,
) -> ResultAccepted:
    """Upload this site's update for a round. The sha256 is checked, the file must be
    safetensors; posting the same update twice returns the first with duplicate=true.

    The site worker sends the weights as the raw body (`application/octet-stream`, meta in
    the `X-Result-Meta` header): written to the store and hashed as it arrives, one pass, no
    form parsing. A multipart form (`weights` file + `meta` field) is accepted too."""
    limit = settings.max_upload_bytes
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    weights: BinaryIO | site_api.Stored
    if kind == "multipart/form-data":
        form = await request.form(max_part_size=1 << 20)
        meta_text, upload = form.get("meta"), form.get("weights")
        if not isinstance(meta_text, str):
            raise InvalidSubmission(
                "meta", "", "the form field `meta` (ResultMeta JSON) is missing"
            )
        if not isinstance(upload, StarletteUpload):
            raise InvalidSubmission("weights", "", "the form file `weights` is missing")
        parsed = _result_meta(meta_text)
        weights = upload.file
    elif kind == "application/octet-stream":
        parsed = _result_meta(request.headers.get(META_HEADER))
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"weights: larger than the limit of {limit} bytes")
        weights = await _stream_to_store(request, store, limit)
    else:
        raise InvalidSubmission(
            "weights", "", "send application/octet-stream (meta in X-Result-Meta) or multipart"
        )
    result, duplicate = await run_in_threadpool(
        site_api.submit_result,
        session,
        store,
        site,
        job_id,
        round_num,
        weights,
        parsed.model_dump(),
        dispatcher,
        limit,
    )
    return ResultAccepted(
        job_id=job_id,
        round=round_num,
        site=site.name,
        status=result.status,
        sha256=result.sha256 or "",
        duplicate=duplicate,
    )


def _result_meta(text: str | None) -> ResultMeta:
    if text is None:
        raise InvalidSubmission(
            "meta", "", f"the {META_HEADER} header (ResultMeta JSON) is missing"
        )
    try:
        # pydantic's own JSON parser: depth-limited, so "[[[[..." is a 422, not a RecursionError
        return ResultMeta.model_validate_json(text)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in err["loc"])
        raise InvalidSubmission(
            "meta", field, f"not a valid ResultMeta JSON: {err['msg']}"
        ) from None


async def _stream_to_store(request: Request, store: ArtifactStore, limit: int) -> site_api.Stored:
    """The body into the store as it arrives, hashed on the way: one pass, no temp copy.
    A site's update is sent again if lost, so no fsync (the aggregator reads it soon)."""
    with store.writer(max_bytes=limit) as out:
        try:
            async for chunk in request.stream():
                out.write(chunk)
        except ArtifactTooLarge:
            raise PayloadTooLarge(f"weights: larger than the limit of {limit} bytes") from None
        return out.commit(durable=False)
