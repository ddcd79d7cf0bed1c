"""Helpers for the backend API tests (imported by conftest and the tests)."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fastapi.testclient import TestClient
from safetensors.torch import save
from sqlalchemy import select

from resonfl_server.backend.models import Job, JobStatus, Round, RoundStatus
from resonfl.config import FederationConfig, ModelConfig
from resonfl.job import Job as JobSpec

MAX_UPLOAD = 2 * 1024 * 1024

MODEL_DEF = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)


def fl_train_model(model, env, out_dir, logger):
    return {"samples": 1, "metrics": {}}
"""


@dataclass
class RecordingDispatcher:
    """Our own Dispatcher interface, recording what the API asked for."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def send_start(self, job_id: int) -> None:
        self.calls.append(("start", job_id))

    def send_train(self, site: str, job_id: int, round_num: int) -> None:
        self.calls.append(("train", site, job_id, round_num))

    def send_prepare(self, site: str, job_id: int) -> None:
        self.calls.append(("prepare", site, job_id))

    def send_aggregate(self, job_id: int, round_num: int) -> None:
        self.calls.append(("aggregate", job_id, round_num))

    def send_fold(self, job_id: int, round_num: int, site: str) -> None:
        self.calls.append(("fold", job_id, round_num, site))



def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- job folders -------------------------------------------------------------------------
def job_spec(tmp_path: Path, shards: bool = True, checkpoint: Path | None = None) -> JobSpec:
    shard_dirs = {}
    if shards:
        for site in ("site-1", "site-2"):
            folder = tmp_path / "shard-src" / site
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "train.txt").write_text(f"data of {site}\n")
            shard_dirs[site] = folder
    return JobSpec(
        name="tiny",
        model=ModelConfig(source=MODEL_DEF),
        federation=FederationConfig(num_rounds=2, sites=["site-1", "site-2"]),
        shards=shard_dirs,
        model_checkpoint=checkpoint,
    )


def zip_folder(folder: Path, prefix: str = "", exclude: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix()
            if path.is_file() and not rel.startswith(exclude):
                archive.write(path, prefix + rel)
    return buffer.getvalue()


def submit_zip(client: TestClient, token: str, data: bytes, **extra: Any) -> Any:
    files: list[tuple[str, Any]] = [("job_zip", ("job.zip", data, "application/zip"))]
    for name, value in extra.items():
        files.append((name, value))
    return client.post("/api/v1/jobs", files=files, headers=auth(token))


def safetensors_bytes(value: float = 1.0) -> bytes:
    return save({"fc.weight": torch.full((2, 4), value), "fc.bias": torch.zeros(2)})


def open_round(app: Any, job_id: int, number: int, weights: bytes) -> None:
    """Put a job in the state the aggregator leaves it in: running, round N open, its
    entering weights in the artifact store."""
    key, digest, _ = app.state.store.put_bytes(weights)
    with app.state.session_factory() as db:
        job = db.get(Job, job_id)
        job.status = JobStatus.RUNNING
        job.current_round = number
        rnd = db.scalar(select(Round).where(Round.job_id == job_id, Round.number == number))
        if rnd is None:
            rnd = Round(job_id=job_id, number=number)
            db.add(rnd)
        rnd.status = RoundStatus.RUNNING
        rnd.weights_key, rnd.weights_sha256 = key, digest
        db.commit()
