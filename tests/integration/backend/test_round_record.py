"""What an aggregated round leaves in the job store: typed times, metrics rows, and the views."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from backend_support import auth, open_round, safetensors_bytes, submit_zip, zip_folder
from fastapi.testclient import TestClient
from sqlalchemy import select

from resonfl_server.backend.models import Job, Round, RoundMetric
from resonfl_server.backend.services import rounds
from resonfl_server.backend.web import job_view


@pytest.fixture
def job_id(client: TestClient, app: Any, job_dir: Path, user_token: str) -> int:
    response = submit_zip(client, user_token, zip_folder(job_dir))
    assert response.status_code == 201, response.text
    job = int(response.json()["id"])
    open_round(app, job, 0, safetensors_bytes(0.5))
    with app.state.session_factory() as db:
        db.scalar(select(Round).where(Round.job_id == job)).min_results = 2
        db.commit()
    return job


def _post(client: TestClient, token: str, job: int, samples: int, top1: float) -> None:
    data = safetensors_bytes(1.0)
    meta = {
        "samples": samples,
        "metrics": {"global_top1": top1, "train_loss": 1.0},
        "train_s": 0.5,
        "sha256": hashlib.sha256(data).hexdigest(),
        "log": "",
    }
    response = client.post(
        f"/api/v1/site/jobs/{job}/rounds/0/result",
        files={"weights": ("w.safetensors", data)},
        data={"meta": json.dumps(meta)},
        headers=auth(token),
    )
    assert response.status_code == 200, response.text


def test_an_aggregated_round_has_typed_times_and_metric_rows_shown_by_the_api_and_page(
    client: TestClient,
    app: Any,
    job_id: int,
    site_tokens: dict[str, str],
    user_token: str,
    dispatcher: Any,
) -> None:
    _post(client, site_tokens["site-1"], job_id, 10, 0.5)
    _post(client, site_tokens["site-2"], job_id, 30, 0.9)
    with app.state.session_factory() as db:
        assert rounds.aggregate_round(db, app.state.store, job_id, 0, dispatcher)
    with app.state.session_factory() as db:
        rnd = db.scalar(select(Round).where(Round.job_id == job_id, Round.number == 0))
        assert rnd is not None and rnd.round_s is not None and rnd.round_s >= 0
        assert rnd.train_s_max == 0.5 and rnd.min_results == 2
        stored = {m.name: m.value for m in db.scalars(select(RoundMetric))}
        assert stored == pytest.approx({"global_top1": 0.8, "train_loss": 1.0})
        job = db.get(Job, job_id)
        assert job is not None
        view = job_view.build(job, "owner", app.state.store, {})
        assert view.global_metrics == pytest.approx({"global_top1": 0.8, "train_loss": 1.0})
        assert view.rows[0].round_s == rnd.round_s
        assert "global model" in "".join(str(c) for c in view.charts)

    public = client.get(f"/api/v1/jobs/{job_id}", headers=auth(user_token)).json()
    first = public["rounds"][0]
    assert first["metrics"] == pytest.approx({"global_top1": 0.8, "train_loss": 1.0})
    assert first["timings"]["train_s_max"] == 0.5 and first["timings"]["min_results"] == 2
    assert first["timings"]["redispatched"] == {}
    assert public["rounds"][1]["timings"]["round_s"] is None  # the next round is still open
