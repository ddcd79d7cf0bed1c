"""Submitting a job: assemble the job folder from uploads, validate it exactly like the SDK
(resonfl.job.validate_job_dir), store it, start it. On any error nothing is left behind:
no database row, no workspace, no artifacts."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from resonfl_server.backend.models import Artifact, Job, JobStatus, Site, User
from resonfl_server.backend.schemas.common import UnsafeJSON, clean_json
from resonfl_server.backend.services.archives import safe_extract, tree, write_zip, zip_names
from resonfl_server.backend.services.dispatch import Dispatcher
from resonfl_server.backend.services.errors import InvalidSubmission, PayloadTooLarge
from resonfl_server.backend.storage import ArtifactStore
from resonfl.config import SITE_NAME_RE
from resonfl.job import (
    CHECKPOINT_NAMES,
    CLIENT_CONFIG,
    JOB_FILES,
    META,
    REQUIREMENTS,
    SERVER_CONFIG,
    SHARDS_DIR,
    JobValidationError,
    validate_job_dir,
)
from resonfl.job import Job as JobSpec

_CHUNK = 1 << 20


@dataclass
class Upload:
    filename: str
    file: BinaryIO


@dataclass
class Submission:
    """What a user uploaded: any of the six files by name, and/or a zip of the job folder,
    plus shards (a zip per site named <site>.zip, or zips holding shards/<site>/...),
    requirements.txt and a warm-start checkpoint."""

    files: dict[str, Upload] = field(default_factory=dict)
    job_zip: Upload | None = None
    shards: list[Upload] = field(default_factory=list)
    requirements: Upload | None = None
    checkpoint: Upload | None = None


def create_job(
    session: Session,
    store: ArtifactStore,
    owner: User,
    submission: Submission,
    dispatcher: Dispatcher,
    max_bytes: int,
) -> Job:
    """Validate, store and start a job; return its row."""
    staging = store.scratch_dir()
    try:
        folder = _assemble(staging, submission, max_bytes)
        return submit_folder(session, store, owner, folder, dispatcher)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def submit_folder(
    session: Session,
    store: ArtifactStore,
    owner: User,
    folder: Path,
    dispatcher: Dispatcher,
    twin_of_id: int | None = None,
) -> Job:
    """Validate, store and start a job folder the server assembled (an upload, a twin); the
    folder is moved into the job's workspace."""
    spec = _validate(folder)
    _check_sites_registered(session, spec)
    job = _persist(session, store, owner, folder, spec, twin_of_id)
    from resonfl_server.backend.services import rounds  # the round state machine (its own module)
    from resonfl_server.backend.services import approvals  # imports rounds (same reason)

    try:
        approvals.request(session, job)
        rounds.start_job(session, job.id, dispatcher)
    except Exception as exc:
        session.rollback()
        job.status = JobStatus.FAILED
        job.error = f"could not start: {exc}"
        session.commit()
        raise
    session.refresh(job)
    return job


# -- assembling the folder ---------------------------------------------------------------
def _assemble(staging: Path, sub: Submission, max_bytes: int) -> Path:
    folder = staging / "job"
    folder.mkdir()
    if sub.job_zip is not None:
        names = zip_names(sub.job_zip.file, "job_zip")
        root = _zip_root(names)
        safe_extract(sub.job_zip.file, folder, "job_zip", max_bytes, strip=root)
    for name, upload in sub.files.items():
        if name not in JOB_FILES:
            raise InvalidSubmission(name, "", f"not one of the job files {JOB_FILES}")
        _copy(upload.file, folder / name, max_bytes, name)
    for upload in sub.shards:
        _add_shard(upload, folder, max_bytes)
    if sub.requirements is not None:
        _copy(sub.requirements.file, folder / REQUIREMENTS, max_bytes, REQUIREMENTS)
    if sub.checkpoint is not None:
        _copy(sub.checkpoint.file, folder / _checkpoint_target(folder), max_bytes, "checkpoint")
    return folder


def _zip_root(names: list[PurePosixPath]) -> str | None:
    """The folder inside a job zip that holds meta.json: the top level or one folder down."""
    if PurePosixPath(META) in names:
        return None
    tops = {n.parts[0] for n in names if len(n.parts) == 2 and n.parts[1] == META}
    return tops.pop() if len(tops) == 1 else None


def _add_shard(upload: Upload, folder: Path, max_bytes: int) -> None:
    what = f"shards ({upload.filename})"
    names = zip_names(upload.file, what)
    if names and all(n.parts[0] == SHARDS_DIR for n in names):
        safe_extract(upload.file, folder, what, max_bytes)
        return
    site = PurePosixPath(upload.filename or "").name.removesuffix(".zip")
    if not SITE_NAME_RE.fullmatch(site):
        raise InvalidSubmission(
            "shards", upload.filename, "name a shard zip <site>.zip or put shards/<site>/ in it"
        )
    strip = site if names and all(n.parts[0] == site and len(n.parts) > 1 for n in names) else None
    target = folder / SHARDS_DIR / site
    try:
        target.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InvalidSubmission(
            "shards", upload.filename, f"{SHARDS_DIR}/{site} is a file in job_zip, not a folder"
        ) from None
    safe_extract(upload.file, target, what, max_bytes, strip=strip)


def _checkpoint_target(folder: Path) -> str:
    try:
        meta = json.loads((folder / META).read_text("utf-8"))
        name = meta.get("model_checkpoint")
    except (OSError, ValueError, AttributeError, RecursionError):
        name = None
    if name not in CHECKPOINT_NAMES:
        raise InvalidSubmission(
            META,
            "model_checkpoint",
            f"a checkpoint was uploaded, so meta.json must name it as one of {CHECKPOINT_NAMES}",
        )
    return str(name)


def _copy(src: BinaryIO, target: Path, max_bytes: int, what: str) -> None:
    size = 0
    try:
        out = target.open("wb")
    except (IsADirectoryError, NotADirectoryError):
        raise InvalidSubmission(what, "", "job_zip holds a folder where this file goes") from None
    with out:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"{what}: larger than max_upload_bytes ({max_bytes} bytes)")
            out.write(chunk)


# -- validation --------------------------------------------------------------------------
def _validate(folder: Path) -> JobSpec:
    try:
        spec = validate_job_dir(folder)
    except JobValidationError as exc:
        raise InvalidSubmission(exc.file, exc.field, exc.message) from None
    for name in (META, CLIENT_CONFIG, SERVER_CONFIG):
        # stored as JSON columns and sent back in every job response: refuse what a database
        # or a response cannot carry ("\ud800" and "\u0000" are valid JSON escapes)
        try:
            clean_json(json.loads((folder / name).read_text("utf-8")))
        except UnsafeJSON as exc:
            raise InvalidSubmission(name, exc.where, exc.reason) from None
    shards_dir = folder / SHARDS_DIR
    if shards_dir.is_dir():
        for entry in sorted(shards_dir.iterdir()):
            if entry.name not in spec.shards:
                raise InvalidSubmission(
                    META,
                    "shards",
                    f"a shard was uploaded for {entry.name!r} but meta.json lists "
                    f"shards only for {sorted(spec.shards)}",
                )
    for path in folder.rglob("*"):
        if path.is_symlink():
            raise InvalidSubmission(path.relative_to(folder).as_posix(), "", "symbolic link")
    if spec.model_checkpoint is not None:
        check_checkpoint(Path(spec.model_checkpoint))
    return spec


def _check_sites_registered(session: Session, spec: JobSpec) -> None:
    """A job naming a site this server does not know would fail a moment after a 201:
    refuse it now, naming the unknown sites (and the known ones, to fix the typo)."""
    wanted = list(spec.federation.sites)
    known = set(session.scalars(select(Site.name).where(Site.name.in_(wanted))))
    unknown = [s for s in wanted if s not in known]
    if unknown:
        registered = sorted(session.scalars(select(Site.name)))
        raise InvalidSubmission(
            META,
            "sites",
            f"sites not registered on this server: {', '.join(unknown)} "
            f"(registered: {', '.join(registered) or 'none'})",
        )


def check_checkpoint(path: Path) -> None:
    """A checkpoint must be safetensors, or a torch file that loads with weights_only=True
    (a pickle that would run code is refused)."""
    if path.suffix == ".safetensors":
        if not is_safetensors(path):
            raise InvalidSubmission(path.name, "", "not a valid safetensors file")
        return
    import torch  # lazy: torch

    try:
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to load means "refuse"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidSubmission(
            path.name, "", f"not loadable with torch.load(weights_only=True): {first}"
        ) from None


def is_safetensors(path: Path) -> bool:
    """Parse the header without loading tensors (safetensors refuses anything malformed)."""
    from safetensors import safe_open  # lazy: torch

    try:
        with safe_open(str(path), framework="pt") as fh:
            fh.keys()
    except Exception:  # noqa: BLE001 - any parse failure means "not safetensors"
        return False
    return True


# -- storing -----------------------------------------------------------------------------
def _persist(
    session: Session,
    store: ArtifactStore,
    owner: User,
    folder: Path,
    spec: JobSpec,
    twin_of_id: int | None = None,
) -> Job:
    fed = spec.federation
    files = {name: (folder / name).read_text("utf-8") for name in JOB_FILES}
    config: dict[str, Any] = {
        "meta": json.loads(files[META]),
        "client": json.loads(files[CLIENT_CONFIG]),
        "server": json.loads(files[SERVER_CONFIG]),
    }
    job = Job(
        owner_id=owner.id,
        name=spec.name,
        status=JobStatus.QUEUED,
        files=files,
        attachments={},
        config=config,
        sites=list(fed.sites),
        num_rounds=fed.num_rounds,
        min_clients=fed.effective_min_clients,
        twin_of_id=twin_of_id,
    )
    stored: list[str] = []
    try:
        session.add(job)
        session.flush()
        store.create_workspace(job.id, folder)
        job.attachments = _store_attachments(session, store, job, spec, stored)
        session.commit()
    except BaseException:
        session.rollback()
        if job.id is not None:
            store.remove_workspace(job.id)
        for key in stored:
            store.delete(key)
        raise
    return job


def _store_attachments(
    session: Session, store: ArtifactStore, job: Job, spec: JobSpec, stored: list[str]
) -> dict[str, Any]:
    folder = store.job_folder(job.id)

    def put(path: Path, kind: str) -> str:
        key, digest, size = store.put_file(path)
        stored.append(key)
        session.add(Artifact(key=key, sha256=digest, size=size, kind=kind, job_id=job.id))
        return key

    attachments: dict[str, Any] = {"shards": {}}
    scratch = store.scratch_dir()
    try:
        for site in sorted(spec.shards):
            zipped = write_zip(scratch / f"{site}.zip", tree(folder / SHARDS_DIR / site))
            attachments["shards"][site] = put(zipped, "shard")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if (folder / REQUIREMENTS).is_file():
        attachments["requirements"] = put(folder / REQUIREMENTS, "requirements")
    ckpt = spec.checkpoint_name()
    if ckpt is not None:
        attachments["checkpoint"] = put(folder / ckpt, "checkpoint")
    return attachments
