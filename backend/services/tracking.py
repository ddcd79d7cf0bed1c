"""Experiment tracking as rounds finish: TensorBoard event files per job (always) and MLflow
(when `RESONFL_MLFLOW_TRACKING_URI` is set). Runs in the aggregator right after a round is
aggregated; a tracking failure is logged and never fails the round.

Layout: data_dir/jobs/<id>/tensorboard/global/ (the global model and the round: losses,
top-1, learning rate, time split) and .../tensorboard/sites/<site>/ (that site's own), one
event file per round (`*.round<N>`), step = round number. `tensorboard --logdir` on the
folder, or the job page's download (a zip of it), shows them.
"""

from __future__ import annotations

import io
import logging
import math
import os
import zipfile
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from resonfl_server.backend.core.config import Settings
from resonfl_server.backend.models import Job, ResultStatus, Round, RoundStatus, SiteResult
from resonfl_server.backend.storage import ArtifactStore

log = logging.getLogger("resonfl.tracking")

# tag -> round metric key (the global model and the samples-weighted site averages)
GLOBAL_METRICS = {
    "loss/train": "train_loss",
    "loss/val_global_model": "global_val_loss",
    "loss/val_local_models": "val_loss",
    "top1/global_model": "global_top1",
    "top1/local_models": "top1",
    "lr/end_of_round": "lr_end",
}
SITE_METRICS = {
    "loss/train": "train_loss",
    "loss/val": "val_loss",
    "top1/local_model": "top1",
    "top1/global_model": "global_top1",
    "lr/end_of_round": "lr_end",
}
ROUND_TIMES = ("round_s", "train_s_max", "overhead_s", "site_overhead_s", "transport_s", "aggregate_s")


def events_dir(store: ArtifactStore, job_id: int) -> Path:
    return store.workspace(job_id) / "tensorboard"


def record_round(settings: Settings, session: Session, store: ArtifactStore, job_id: int, round_num: int) -> None:
    """Write round `round_num` of the job to TensorBoard (and MLflow); never raises."""
    try:
        job = session.get(Job, job_id)
        rnd = session.scalar(select(Round).where(Round.job_id == job_id, Round.number == round_num))
        if job is None or rnd is None or rnd.status != RoundStatus.DONE:
            return
        results = list(
            session.scalars(
                select(SiteResult).where(
                    SiteResult.job_id == job_id,
                    SiteResult.round_num == round_num,
                    SiteResult.status == ResultStatus.DONE,
                )
            )
        )
        scalars = round_scalars(rnd, results)
        write_tensorboard(events_dir(store, job_id), round_num, scalars)
        if settings.mlflow_tracking_uri:
            log_mlflow(settings.mlflow_tracking_uri, store, job, round_num, scalars)
    except Exception:  # noqa: BLE001 - tracking must never fail a round
        log.exception("tracking of job %s round %s failed", job_id, round_num)


def round_scalars(rnd: Round, results: list[SiteResult]) -> dict[str, dict[str, float]]:
    """{"global": {tag: value}, "sites/<site>": {tag: value}} for one round (finite only)."""
    glob: dict[str, float] = {}
    for tag, key in GLOBAL_METRICS.items():
        _put(glob, tag, (rnd.metrics or {}).get(key))
    for name in ROUND_TIMES:
        _put(glob, f"time/{name}", getattr(rnd, name, None))
    out = {"global": glob}
    for res in results:
        site: dict[str, float] = {}
        for tag, key in SITE_METRICS.items():
            _put(site, tag, (res.metrics or {}).get(key))
        _put(site, "time/train_s", res.train_s)
        _put(site, "time/total_s", res.total_s)
        for phase, seconds in (getattr(res, "phases", None) or {}).items():
            if phase.endswith("_s") and phase != "train_s":  # where the rest of the round went
                _put(site, f"time/phase/{phase}", seconds)
        _put(site, "samples", res.samples)
        out[f"sites/{res.site}"] = site
    return out


def _put(into: dict[str, float], tag: str, value: Any) -> None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return
    if math.isfinite(number):
        into[tag] = number


def write_tensorboard(root: Path, round_num: int, scalars: dict[str, dict[str, float]]) -> None:
    from torch.utils.tensorboard import SummaryWriter  # lazy: the aggregator has torch, the API not

    for run, values in scalars.items():
        if not values:
            continue
        writer = SummaryWriter(log_dir=str(root / run), filename_suffix=f".round{round_num}")
        try:
            for tag, value in sorted(values.items()):
                writer.add_scalar(tag, value, global_step=round_num)
        finally:
            writer.close()


def log_mlflow(
    uri: str, store: ArtifactStore, job: Job, round_num: int, scalars: dict[str, dict[str, float]]
) -> None:
    """One MLflow run per job (experiment "resonfl"), metrics per round as steps; the run id
    is kept beside the event files so later rounds log to the same run."""
    from mlflow.tracking import MlflowClient  # lazy: optional, only when a URI is set

    if uri.startswith("file:"):
        # MLflow 3 refuses its file store unless asked; the operator asked by choosing it
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=uri)
    marker = events_dir(store, job.id) / "mlflow_run_id"
    if marker.is_file():
        run_id = marker.read_text("utf-8").strip()
    else:
        found = client.get_experiment_by_name("resonfl")
        experiment = found.experiment_id if found else client.create_experiment("resonfl")
        run = client.create_run(
            experiment, run_name=f"job-{job.id} {job.name}"[:250], tags={"resonfl.job_id": str(job.id)}
        )
        run_id = run.info.run_id
        for key, text in _params(job).items():
            client.log_param(run_id, key, text)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(run_id, "utf-8")
    for run_name, values in scalars.items():
        prefix = "" if run_name == "global" else f"{run_name}/"
        for tag, number in values.items():
            client.log_metric(run_id, prefix + tag, number, step=round_num)


def _params(job: Job) -> dict[str, str]:
    args = (job.config or {}).get("client", {}).get("executors", [{}])[0]
    training = args.get("executor", {}).get("args", {}) if isinstance(args, dict) else {}
    params = {f"training.{k}": str(v)[:250] for k, v in training.items() if k != "extra"}
    params.update(num_rounds=str(job.num_rounds), sites=",".join(job.sites)[:250])
    return params


def events_zip(store: ArtifactStore, job_id: int) -> bytes | None:
    """The job's event files as a zip (`tensorboard/<run>/events...`), or None before any."""
    root = events_dir(store, job_id)
    files = sorted(p for p in root.rglob("events.out.tfevents.*") if p.is_file()) if root.is_dir() else []
    if not files:
        return None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for path in files:
            out.write(path, f"job-{job_id}-tensorboard/{path.relative_to(root).as_posix()}")
    return buf.getvalue()
