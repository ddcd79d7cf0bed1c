"""Aggregation folds each update as it arrives: before the last site reports, once per site
however often its message is delivered, and a dead aggregator's lost fold is rebuilt."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from backend_support import auth, open_round, safetensors_bytes, submit_zip, zip_folder
from fastapi.testclient import TestClient
from safetensors.torch import load_file
from sqlalchemy import select

from resonfl_server.backend.models import Round, SiteResult
from resonfl_server.backend.services import folds, rounds


@pytest.fixture
def job_id(client: TestClient, app: Any, job_dir: Path, user_token: str) -> int:
    response = submit_zip(client, user_token, zip_folder(job_dir))
    assert response.status_code == 201, response.text
    job = int(response.json()["id"])
    open_round(app, job, 0, safetensors_bytes(0.0))
    with app.state.session_factory() as db:
        db.scalar(select(Round).where(Round.job_id == job)).min_results = 2
        for site in ("site-1", "site-2"):  # both sites are training, as rounds opens it
            db.add(SiteResult(job_id=job, round_num=0, site=site))
        db.commit()
    return job


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    folds.REGISTRY = folds.FoldRegistry()
    yield
    folds.REGISTRY = folds.FoldRegistry()


def _post(client: TestClient, token: str, job: int, value: float, samples: int) -> None:
    data = safetensors_bytes(value)
    meta = {"samples": samples, "metrics": {}, "sha256": hashlib.sha256(data).hexdigest()}
    response = client.post(
        f"/api/v1/site/jobs/{job}/rounds/0/result",
        content=data,
        headers=auth(token)
        | {"Content-Type": "application/octet-stream", "X-Result-Meta": json.dumps(meta)},
    )
    assert response.status_code == 200, response.text


def _fold(app: Any, job: int, site: str) -> bool:
    with app.state.session_factory() as db:
        return rounds.fold_arrived(db, app.state.store, job, 0, site)


def _aggregate(app: Any, job: int, dispatcher: Any) -> torch.Tensor:
    with app.state.session_factory() as db:
        assert rounds.aggregate_round(db, app.state.store, job, 0, dispatcher)
        nxt = db.scalar(select(Round).where(Round.job_id == job, Round.number == 1))
        assert nxt is not None and nxt.weights_key, "round 1 was not opened"
        return load_file(app.state.store.path(nxt.weights_key))["fc.weight"]


def test_an_update_is_folded_before_the_last_site_reports_and_only_once(
    client: TestClient, app: Any, job_id: int, site_tokens: dict[str, str], dispatcher: Any
) -> None:
    _post(client, site_tokens["site-1"], job_id, 1.0, samples=10)
    assert ("fold", job_id, 0, "site-1") in dispatcher.calls
    assert ("aggregate", job_id, 0) not in dispatcher.calls

    assert _fold(app, job_id, "site-1")
    assert not _fold(app, job_id, "site-1"), "a redelivered fold message folded it again"
    entry = folds.REGISTRY.entry(job_id, 0, _round_key(app, job_id))
    assert entry is not None and entry.fold is not None
    assert entry.fold.accepted == ["site-1"]  # folded while site-2 is still training

    # the aggregation does not read site-1's update again: it was folded on arrival
    with app.state.session_factory() as db:
        first = db.scalar(select(SiteResult).where(SiteResult.site == "site-1"))
        assert first is not None and first.artifact_key
        app.state.store.path(first.artifact_key).unlink()

    _post(client, site_tokens["site-2"], job_id, 3.0, samples=30)
    assert ("aggregate", job_id, 0) in dispatcher.calls
    assert ("fold", job_id, 0, "site-2") not in dispatcher.calls  # the aggregation folds it
    weights = _aggregate(app, job_id, dispatcher)
    assert torch.equal(weights, torch.full((2, 4), (10 * 1.0 + 30 * 3.0) / 40))
    assert not _fold(app, job_id, "site-1"), "a late message reopened an aggregated round"
    assert len(folds.REGISTRY) == 0


def test_an_aggregator_killed_after_folding_leaves_the_same_weights_to_its_successor(
    client: TestClient, app: Any, job_id: int, site_tokens: dict[str, str], dispatcher: Any
) -> None:
    _post(client, site_tokens["site-1"], job_id, 1.0, samples=10)
    assert _fold(app, job_id, "site-1")
    folds.REGISTRY = folds.FoldRegistry()  # SIGKILL: the running fold dies with the process
    _post(client, site_tokens["site-2"], job_id, 3.0, samples=30)
    weights = _aggregate(app, job_id, dispatcher)
    assert torch.equal(weights, torch.full((2, 4), (10 * 1.0 + 30 * 3.0) / 40))


def _round_key(app: Any, job: int) -> str:
    with app.state.session_factory() as db:
        rnd = db.scalar(select(Round).where(Round.job_id == job, Round.number == 0))
        assert rnd is not None and rnd.weights_key
        return rnd.weights_key
