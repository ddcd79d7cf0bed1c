"""Privacy and robustness on the real platform (uvicorn, aggregator, two site workers):
a DP-SGD job reports each site's epsilon as the accountant computes it by hand and stops
before its target; a norm-clipped job bounds an attacking site's pull on the model."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from test_platform_e2e import auth, submit, wait_job

from resonfl.catalog import make_job
from resonfl.catalog.attack import byzantine_source
from resonfl.fl.accountant import ORDERS
from resonfl.job import Job
from resonfl_server.launcher.local import LocalPlatform

pytestmark = pytest.mark.integration

STEPS, SIGMA, DELTA, BATCH = 5, 1.0, 1e-5, 32


def digits_job(folder: Path, rounds: int, source: Callable[[str], str] | None = None) -> Job:
    job = make_job(
        "digits", sites=2, num_rounds=rounds, shards_dir=folder / "shards", local_steps=STEPS
    )
    if source is not None:
        model = job.model.model_copy(update={"source": source(job.model.source)})
        job = job.model_copy(update={"model": model})
    return job


def by_hand(q: float, rounds: int) -> float:
    """opacus's RDP accountant, run by hand: STEPS Poisson-sampled steps per round."""
    rdp = compute_rdp(q=q, noise_multiplier=SIGMA, steps=STEPS * rounds, orders=list(ORDERS))
    return float(get_privacy_spent(orders=list(ORDERS), rdp=rdp, delta=DELTA)[0])


def sample_rate(shard: Path) -> float:
    """opacus's rate for a loader of batch BATCH: 1 / batches per epoch."""
    return 1 / math.ceil(len(np.load(shard / "train.npz")["y"]) / BATCH)


def round_model(platform: LocalPlatform, job_id: int, n: int) -> dict[str, torch.Tensor]:
    url = f"{platform.url}/api/v1/jobs/{job_id}/rounds/{n}/download"
    resp = httpx.get(url, headers=auth(platform), timeout=30)
    assert resp.status_code == 200, resp.text[:200]
    return dict(torch.load(io.BytesIO(resp.content), weights_only=True))


def test_dp_sgd_job_reports_the_accountants_epsilon_and_stops_before_its_target(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    job = digits_job(tmp_path / "dp", rounds=5)
    q = {site: sample_rate(path) for site, path in job.shards.items()}
    # a target between the worst site's epsilon after round 1 and after round 2
    target = (max(by_hand(v, 2) for v in q.values()) + min(by_hand(v, 3) for v in q.values())) / 2
    job.federation.aggregator_path = "resonfl.fl.dp_sgd.DPSGDFedAvg"
    job.federation.aggregator_args = {
        "target_epsilon": target, "delta": DELTA, "noise_multiplier": SIGMA,
    }  # fmt: skip
    done: dict[str, Any] = wait_job(platform, submit(platform, job.render(tmp_path / "dp")))

    assert done["status"] == "finished", done["error"]
    assert "Stopped early: privacy budget" in (done["error"] or "")
    rounds = [r for r in done["rounds"] if r["status"] == "done"]
    assert [r["number"] for r in rounds] == [0, 1], "round 2 would pass the target"
    for rnd in rounds:
        for res in rnd["results"]:
            expected = by_hand(q[res["site"]], rnd["number"] + 1)
            assert res["metrics"]["dp_epsilon"] == pytest.approx(expected, rel=1e-9)
            assert res["metrics"]["dp_epsilon"] <= target
        worst = max(r["metrics"]["dp_epsilon"] for r in rnd["results"])
        assert rnd["metrics"]["dp_epsilon"] == pytest.approx(worst)
    resp = httpx.get(f"{platform.url}/api/v1/jobs/{done['id']}/download", headers=auth(platform))
    assert resp.status_code == 200, "the last round within the budget is the final model"


def test_norm_clipping_bounds_an_attacking_sites_pull_on_the_platform(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    max_norm = 0.5
    job = digits_job(tmp_path / "clip", 3, lambda s: byzantine_source(s, "site-2", -100.0))
    job.federation.aggregator_path = "resonfl.fl.clipping.NormClip"
    job.federation.aggregator_args = {"max_norm": max_norm}
    done = wait_job(platform, submit(platform, job.render(tmp_path / "clip")))

    assert done["status"] == "finished", done["error"]
    for rnd in done["rounds"]:
        assert rnd["metrics"]["clipped_sites"] >= 1, "the attacker's update was cut"
    models = [round_model(platform, done["id"], n) for n in range(3)]
    for before, after in zip(models, models[1:], strict=False):
        step = math.sqrt(
            sum(float((after[k].double() - before[k].double()).pow(2).sum())
                for k in before if before[k].is_floating_point())
        )  # fmt: skip
        assert step <= max_norm * (1 + 1e-5), "a round moves the model by at most max_norm"
