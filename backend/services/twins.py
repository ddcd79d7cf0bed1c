"""The centralized twin of an FL job: the same recipe trained on the pooled training shards on
one site worker, so the job page can show how far FL is from centralized training.

- **Who can have one**: a job whose data the server holds (shards uploaded or generated with
  the job, in npz or image-folder form). Data that lives only at the sites cannot be pooled:
  `twin_unavailable` says why and the API answers 409 with that reason.
- **Same recipe**: the job's model_def.py, TrainingConfig (seed included), warm start and
  requirements; one site (the job's first), the same number of rounds, FedAvg over that one
  site (= the site's own weights, so each "round" is a stretch of centralized training with
  its optimizer state kept across rounds).
- **Same total optimizer steps**: each twin round takes the steps of all the FL job's sites
  in one round together (local_steps x sites per round), so the twin ends after exactly as
  many optimizer steps as the FL job's sites took together, seeing as many batches. With
  `local_epochs` the twin runs the same epochs over the pooled data (again as many samples).
- **Same evaluation set**: the pooled validation split is the union of the sites' splits;
  the FL job's global metrics are the sites' averaged by samples.
- **Comparison** (`compare`): the global model's metric entering each round for both jobs,
  the gap at the last round both have (points) and per round the share of the gap closed:
  (FL[r] - start) / (centralized final - start), start = the initial model (round 0).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from resonfl.config import FederationConfig
from resonfl.job import SHARDS_DIR
from resonfl.job import Job as JobSpec
from resonfl_server.backend.models import Job, User
from resonfl_server.backend.services.dispatch import Dispatcher
from resonfl_server.backend.services.errors import Conflict
from resonfl_server.backend.services.jobs import get_job_for
from resonfl_server.backend.services.submissions import submit_folder
from resonfl_server.backend.storage import ArtifactStore

# metrics compared, best first: (global metric key, label, higher is better)
METRICS = (("global_top1", "top-1", True), ("global_val_loss", "val loss", False))
SPLITS = ("train", "val")


@dataclass
class TwinCurve:
    key: str
    label: str
    higher_is_better: bool
    fl: list[tuple[int, float]]
    central: list[tuple[int, float]]
    gap: float | None = None  # central - FL at the last round both have (metric units)
    gap_round: int | None = None
    closed: list[tuple[int, float]] = field(default_factory=list)  # round -> share 0..1


@dataclass
class TwinComparison:
    job_id: int
    twin_id: int
    twin_status: str
    site: str
    steps_per_round: int | None
    curves: list[TwinCurve]


def twin_unavailable(store: ArtifactStore, job: Job) -> str | None:
    """Why this job cannot have a centralized twin, or None when it can."""
    if job.twin_of_id is not None:
        return f"this job is itself the centralized twin of job {job.twin_of_id}"
    shards = (job.attachments or {}).get("shards") or {}
    missing = [s for s in job.sites if s not in shards]
    if missing:
        return (
            "the data lives only at the sites (no shard uploaded with the job for "
            f"{', '.join(missing)}): the server holds no training data to pool, so a "
            "centralized twin cannot run"
        )
    folder = store.job_folder(job.id) / SHARDS_DIR
    for site in job.sites:
        if _format(folder / site) is None:
            return (
                f"the shard of {site} is neither npz (train.npz, val.npz) nor an image folder "
                "(train/, val/): the platform cannot pool it"
            )
    return None


def _format(shard: Path) -> str | None:
    if all((shard / f"{s}.npz").is_file() for s in SPLITS):
        return "npz"
    if all((shard / s).is_dir() for s in SPLITS):
        return "image_folder"
    return None


def latest_twin(session: Session, job: Job) -> Job | None:
    return session.scalars(
        select(Job).where(Job.twin_of_id == job.id).order_by(Job.id.desc()).limit(1)
    ).first()


def create_twin(
    session: Session, store: ArtifactStore, user: User, job_id: int, dispatcher: Dispatcher
) -> Job:
    """Submit the centralized twin of a job the user may see; raises Conflict with the reason
    when it cannot have one."""
    job = get_job_for(session, user, job_id)
    reason = twin_unavailable(store, job)
    if reason:
        raise Conflict(reason)
    spec = JobSpec.load(store.job_folder(job.id))
    staging = store.scratch_dir()
    try:
        pooled = pool_shards(store.job_folder(job.id) / SHARDS_DIR, job.sites, staging / "pooled")
        twin = twin_spec(spec, pooled).render(staging / "job")
        owner = session.get(User, job.owner_id) or user
        return submit_folder(session, store, owner, twin, dispatcher, twin_of_id=job.id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def sites_per_round(spec: JobSpec) -> int:
    """How many sites train in one round of the FL job (Cyclic: one at a time)."""
    if "cyclic" in spec.federation.workflow_path.lower():
        return 1
    return len(spec.federation.sites)


def twin_spec(spec: JobSpec, pooled: Path) -> JobSpec:
    """The FL job's recipe for one site holding the pooled data (see the module doc)."""
    site = spec.federation.sites[0]
    training = spec.training
    if training.local_steps is not None:
        training = training.model_copy(
            update={"local_steps": training.local_steps * sites_per_round(spec)}
        )
    fed = spec.federation
    federation = FederationConfig(
        num_rounds=fed.num_rounds,
        sites=[site],
        round_timeout_s=min(fed.round_timeout_s * sites_per_round(spec), 7 * 24 * 3600),
        gpus_per_site=fed.gpus_per_site,
    )
    return spec.model_copy(
        update={
            "name": f"{spec.name} · centralized twin"[:200],
            "training": training,
            "federation": federation,
            "shards": {site: pooled},
        }
    )


def pool_shards(shards: Path, sites: list[str], out: Path) -> Path:
    """One folder whose train and val splits are the union of the sites' (npz or images)."""
    out.mkdir(parents=True)
    if _format(shards / sites[0]) == "npz":
        for split in SPLITS:
            parts = [np.load(shards / s / f"{split}.npz") for s in sites]  # no pickles
            np.savez(
                out / f"{split}.npz",
                X=np.concatenate([p["X"] for p in parts]),
                y=np.concatenate([p["y"] for p in parts]),
            )
        return out
    for site in sites:
        for split in SPLITS:
            for path in sorted((shards / site / split).rglob("*")):
                if path.is_file():
                    rel = path.relative_to(shards / site / split)
                    target = out / split / rel.parent / f"{site}-{rel.name}"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)
        for extra in (shards / site).iterdir():  # classes.json and the like, first site's
            if extra.is_file() and not (out / extra.name).exists():
                shutil.copyfile(extra, out / extra.name)
    return out


def compare(job: Job, twin: Job) -> TwinComparison:
    """FL and centralized curves side by side, the gap and the share of it closed."""
    curves = []
    for key, label, higher in METRICS:
        fl, central = _points(job, key), _points(twin, key)
        curve = TwinCurve(key, label, higher, fl, central)
        common = sorted(set(dict(fl)) & set(dict(central)))
        if common:
            last = common[-1]
            curve.gap_round = last
            curve.gap = dict(central)[last] - dict(fl)[last]
            start, target = fl[0][1], central[-1][1]
            if fl[0][0] == 0 and abs(target - start) > 1e-12:
                curve.closed = [(r, (v - start) / (target - start)) for r, v in fl]
        curves.append(curve)
    steps = _steps(twin)
    return TwinComparison(job.id, twin.id, twin.status.value, twin.sites[0], steps, curves)


def _points(job: Job, key: str) -> list[tuple[int, float]]:
    out = []
    for rnd in job.rounds:
        value = (rnd.metrics or {}).get(key)
        if isinstance(value, int | float) and np.isfinite(value):
            out.append((rnd.number, float(value)))
    return sorted(out)


def _steps(job: Job) -> int | None:
    client = json.loads(job.files.get("config_fed_client.json", "{}"))
    try:
        steps = client["executors"][0]["executor"]["args"].get("local_steps")
    except (KeyError, IndexError, TypeError):
        return None
    return int(steps) if isinstance(steps, int) else None
