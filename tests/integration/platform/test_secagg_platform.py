"""Secure aggregation on the real platform (uvicorn, the aggregator and four site workers as
subprocesses, Redis): the keys, shares, masked uploads and unmask answers go through the API.

* A SecAgg job's global model equals the same job's under plain FedAvg within quantization
  error, while what the server stored of each site's upload is a uniform-looking uint64
  vector (a FedAvg upload, the same weights in the clear, is far from uniform).
* A site worker SIGKILLed after it shared its keys, mid-round, is recovered from its shares:
  the round completes with the other three and the job finishes.
"""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from test_platform_e2e import TERMINAL, auth, read_job, submit, wait_job

from resonfl.catalog import make_job
from resonfl_server.backend.models import SecAggMessage, SiteResult
from resonfl_server.backend.storage import ArtifactStore
from resonfl_server.launcher.local import LocalPlatform

pytestmark = pytest.mark.integration

SECAGG = "resonfl.fl.secagg.SecAggFedAvg"
FEDAVG = "resonfl.fl.fedavg.FedAvg"
STEP = 2 * 1.0 / (2**24 - 1)  # one quantization step at clip_range 1, 24 bits

SLOW_SITE_4_IN_ROUND_1 = """
import time as _time
_train_secagg_test = fl_train_model


def fl_train_model(model, env, out_dir, logger):
    if env.site_name == "site-4" and env.current_round == 1:
        _time.sleep(120)  # the test kills this site's worker meanwhile
    return _train_secagg_test(model, env, out_dir, logger)
"""


@pytest.fixture
def plat(platform4: LocalPlatform) -> LocalPlatform:
    return platform4


def digits(
    folder: Path, aggregator: str, rounds: int, min_clients: int = 4, slow: bool = False
) -> Path:
    job = make_job(
        "digits", sites=4, num_rounds=rounds, shards_dir=folder / "shards", local_steps=5,
        job_name=folder.name,
    )  # fmt: skip
    job.federation.aggregator_path = aggregator
    if aggregator == SECAGG:  # a site that never comes is left out of the keys after 10 s
        job.federation.aggregator_args = {"stage_timeout_s": 10.0}
    job.federation.min_clients = min_clients
    if slow:
        model = job.model.model_copy(update={"source": job.model.source + SLOW_SITE_4_IN_ROUND_1})
        job = job.model_copy(update={"model": model})
    job.render(folder)
    return folder


def round_model(plat: LocalPlatform, job_id: int, n: int) -> dict[str, torch.Tensor]:
    url = f"{plat.url}/api/v1/jobs/{job_id}/rounds/{n}/download"
    resp = httpx.get(url, headers=auth(plat), timeout=30)
    assert resp.status_code == 200, resp.text[:200]
    return dict(torch.load(io.BytesIO(resp.content), weights_only=True))


def db(plat: LocalPlatform) -> Session:
    return Session(create_engine(str(plat.database_url)))


def stored_uploads(plat: LocalPlatform, job_id: int, round_num: int) -> dict[str, Path]:
    store = ArtifactStore(plat.data_dir)
    with db(plat) as session:
        rows = session.scalars(
            select(SiteResult).where(SiteResult.job_id == job_id, SiteResult.round_num == round_num)
        ).all()
        return {r.site: store.path(r.artifact_key) for r in rows if r.artifact_key}


def byte_chi2(data: bytes) -> float:
    """Pearson's chi-square of the byte histogram against uniform (255 degrees of freedom:
    mean 255, sd ~22.6)."""
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256).astype(float)
    expected = len(data) / 256
    return float(((counts - expected) ** 2 / expected).sum())


def test_secagg_equals_fedavg_within_quantization_error_and_uploads_look_like_noise(
    plat: LocalPlatform, tmp_path: Path
) -> None:
    secure = submit(plat, digits(tmp_path / "secagg", SECAGG, rounds=2))
    plain = submit(plat, digits(tmp_path / "fedavg", FEDAVG, rounds=2))
    for job_id in (secure, plain):
        job = wait_job(plat, job_id)
        assert job["status"] == "finished", job.get("error")

    # round 0 starts from the same weights (same seed) and the sites train the same way
    a, b = round_model(plat, secure, 0), round_model(plat, plain, 0)
    for key, value in b.items():
        if value.is_floating_point():
            assert (a[key] - value).abs().max().item() <= 2 * STEP + 1e-7, key
    detail = httpx.get(f"{plat.url}/api/v1/jobs/{secure}", headers=auth(plat), timeout=30).json()
    assert [r["metrics"].get("secagg_dropped_sites") for r in detail["rounds"]] == [0.0, 0.0]

    # what the server keeps of each site's round-0 update: one uint64 vector, noise to it
    masked = stored_uploads(plat, secure, 0)
    assert sorted(masked) == ["site-1", "site-2", "site-3", "site-4"]
    vectors = []
    for site, path in masked.items():
        tensors = load_file(str(path))
        assert list(tensors) == ["secagg.masked"], site
        vector = tensors["secagg.masked"]
        assert vector.dtype == np.uint64
        vectors.append(vector)
        assert byte_chi2(vector.tobytes()) < 255 + 6 * 22.6, site  # uniform bytes
        # the top bits of a masked value are as often set as not (a quantized update alone
        # lives far below 2^64: its top bit would never be set)
        top = (vector >> np.uint64(63)).astype(float).mean()
        assert 0.4 < top < 0.6, (site, top)
    assert len({v.tobytes() for v in vectors}) == 4
    for site, path in stored_uploads(plat, plain, 0).items():
        clear = Path(path).read_bytes()
        assert byte_chi2(clear) > 10 * 255, site  # float32 weights in the clear: far from it


def test_a_site_killed_after_sharing_is_recovered_from_its_shares(
    plat: LocalPlatform, tmp_path: Path
) -> None:
    job_id = submit(plat, digits(tmp_path / "dropout", SECAGG, rounds=3, min_clients=3, slow=True))
    deadline = time.monotonic() + 300
    with db(plat) as session:
        while time.monotonic() < deadline:  # site-4 has shared in round 1, then trains (slowly)
            shared = session.scalar(
                select(SecAggMessage.id).where(
                    SecAggMessage.job_id == job_id,
                    SecAggMessage.round_num == 1,
                    SecAggMessage.kind == "shares",
                    SecAggMessage.sender == "site-4",
                )
            )
            if shared is not None:
                break
            session.rollback()
            time.sleep(0.3)
        else:
            raise AssertionError("site-4 never shared in round 1")
    worker = plat.workers["site-4"]
    os.killpg(worker.proc.pid, signal.SIGKILL)  # the worker, its job process, its secrets
    try:
        while time.monotonic() < deadline:  # wait_job would stop at the dead worker
            job = read_job(plat, job_id)
            if job["status"] in TERMINAL:
                break
            time.sleep(0.5)
    finally:  # later tests on this platform get their fourth site back
        plat.supervisor.children.remove(worker)
        plat.start_worker("site-4")
    assert job["status"] == "finished", job.get("error")
    round1 = job["rounds"][1]
    assert round1["metrics"]["secagg_dropped_sites"] == 1.0
    done = sorted(r["site"] for r in round1["results"] if r["status"] == "done")
    assert done == ["site-1", "site-2", "site-3"]
    # the sum of the three survivors, unmasked with site-4's pair masks rebuilt from its
    # shares: a sane model came out of it (a mask left in would make the weights ~1e12)
    weights = round_model(plat, job_id, 1)
    assert all(v.abs().max().item() < 100 for v in weights.values() if v.is_floating_point())
    assert job["rounds"][2]["metrics"]["secagg_dropped_sites"] == 0.0  # site-4 was not in it
