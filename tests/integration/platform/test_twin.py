"""The centralized twin over real processes: a digits job whose shards the server holds gets a
twin that trains its recipe on the pooled shards on one site worker (same total optimizer
steps, same seed, same evaluation set); the comparison has both curves and the gap. A job
whose data lives only at the sites gets a 409 with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resonfl.catalog import make_job
from resonfl.client import ApiError, Client
from resonfl.config import FederationConfig, ModelConfig
from resonfl.job import Job
from resonfl_server.launcher.local import LocalPlatform

pytestmark = pytest.mark.integration


def test_a_twin_runs_the_recipe_on_the_pooled_shards_and_shows_the_gap(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    job = make_job(
        "digits", sites=2, num_rounds=3, shards_dir=tmp_path / "shards", alpha=0.1,
        local_steps=5,
    )
    client = Client(platform.url, platform.admin_token)
    fl_id = client.submit(job)
    client.wait(fl_id, progress=False, timeout=600)

    twin = client.twin(fl_id)
    assert twin["twin_of_id"] == fl_id and twin["sites"] == ["site-1"]
    client.wait(int(twin["id"]), progress=False, timeout=600)
    cmp = client.twin_comparison(fl_id)

    assert cmp["twin_id"] == twin["id"] and cmp["twin_status"] == "finished"
    # same total optimizer steps: each twin round takes both sites' 5 steps
    assert cmp["steps_per_round"] == 10
    top1 = next(c for c in cmp["curves"] if c["key"] == "global_top1")
    assert [r for r, _ in top1["fl"]] == [0, 1, 2] == [r for r, _ in top1["central"]]
    # same seed, same initial model, same evaluation set: round 0 scores the same weights on
    # the same (pooled) validation data; the FL average weights sites by training samples, the
    # pooled set by validation samples (574/143 vs 577/144 here): equal to within 1e-3
    assert top1["fl"][0][1] == pytest.approx(top1["central"][0][1], abs=1e-3)
    assert top1["gap_round"] == 2
    assert top1["gap"] == pytest.approx(top1["central"][-1][1] - top1["fl"][-1][1])
    assert [r for r, _ in top1["closed"]] == [0, 1, 2] and top1["closed"][0][1] == 0.0
    # the twin trained on the union of the sites' training shards
    detail = client.status(int(twin["id"]))
    samples = sum(
        len(np.load(tmp_path / "shards" / s / "train.npz")["y"]) for s in ("site-1", "site-2")
    )
    assert detail["rounds"][0]["results"][0]["samples"] == samples
    args = _twin_training(platform, int(twin["id"]))
    assert args["seed"] == job.training.seed and args["local_steps"] == 10

    # the SDK's compare table: the twin differs in its steps per round and its sites only
    table = client.compare([fl_id, int(twin["id"])])
    assert table.column("job") == [fl_id, twin["id"]]
    assert table.column("training.local_steps") == ["5", "10"]
    assert {d["setting"] for d in table.raw["differing"]} == {
        "training.local_steps", "sites", "federation.min_clients", "federation.round_timeout_s",
    }
    assert table.column("global_top1 diff")[0] == 0.0
    assert "training.local_steps" in str(table)
    with pytest.raises(ApiError) as err:
        client.compare([fl_id])
    assert err.value.status == 422 and "compare 2 to 8" in str(err.value)


def test_data_only_at_the_sites_answers_409_with_the_reason(
    platform: LocalPlatform, tmp_path: Path, tiny_model_def: str
) -> None:
    job = Job(
        name="site-data-only",
        model=ModelConfig(source=tiny_model_def),
        federation=FederationConfig(num_rounds=1, sites=["site-1", "site-2"]),
    )
    client = Client(platform.url, platform.admin_token)
    job_id = client.submit(job)
    try:
        with pytest.raises(ApiError) as err:
            client.twin(job_id)
        assert err.value.status == 409
        assert "data lives only at the sites" in str(err.value)
        with pytest.raises(ApiError) as err:
            client.twin_comparison(job_id)
        assert err.value.status == 409
        cli = subprocess.run(
            [sys.executable, "-m", "resonfl.cli", "twin", str(job_id)],
            env={**os.environ, "RESONFL_SERVER": platform.url, "RESONFL_TOKEN": platform.admin_token},
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert cli.returncode == 1 and "data lives only at the sites" in cli.stderr
        assert "Traceback" not in cli.stderr
    finally:
        client.cancel(job_id)


def _twin_training(platform: LocalPlatform, twin_id: int) -> dict[str, object]:
    folder = platform.data_dir / "jobs" / str(twin_id) / "job"
    client = json.loads((folder / "config_fed_client.json").read_text())
    return dict(client["executors"][0]["executor"]["args"])
