"""Sites own their data and their policy, over real processes: three site workers (real
uvicorn, aggregator, Celery on Redis, bubblewrap) each started with its own datasets and
policy, jobs that name a dataset, approval and rejection from the site's CLI.

    site-1  dataset `pets` (npz, 40 samples), runs anyone's jobs
    site-2  dataset `pets` (npz, 24 samples), every job needs the operator's approval
    site-3  dataset `scans` only, runs only nobody@example.org's jobs
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from resonfl.client import Client
from resonfl.config import FederationConfig, ModelConfig, TrainingConfig
from resonfl.job import Job
from resonfl_server.launcher.local import LocalPlatform
from resonfl_server.launcher.supervise import free_port

pytestmark = pytest.mark.integration
TERMINAL = ("finished", "failed", "cancelled")

# Job code that trains on DATA_ROOT and tries to change the site's data: the site must see
# its own counts in `samples` and the write must fail (read-only bind).
MODEL_DEF = textwrap.dedent(
    """
    import os
    from pathlib import Path

    import numpy as np
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x)


    def fl_train_model(model, env, out_dir, logger):
        root = Path(os.environ["DATA_ROOT"])
        with np.load(root / "train.npz") as data:
            x, y = torch.tensor(data["X"]), torch.tensor(data["y"])
        try:
            (root / "train.npz").write_bytes(b"poisoned")
            wrote = 1.0
        except OSError:
            wrote = 0.0
        try:
            (root / "new-file").write_text("x")
            created = 1.0
        except OSError:
            created = 0.0
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"samples": len(x), "metrics": {"wrote_data": wrote, "created_file": created}}
    """
).lstrip()


def _npz(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(n)
    np.savez(folder / "train.npz", X=rng.normal(size=(n, 4)).astype("float32"),
             y=(np.arange(n) % 3).astype("int64"))  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def sites_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    root = tmp_path_factory.mktemp("site-data")
    settings3 = root / "site-3.toml"
    settings3.write_text(
        f'[datasets.scans]\npath = "{_npz(root / "scans", 12)}"\n'
        '[policy]\nsubmitters = ["nobody@example.org"]\n'
    )
    plat = LocalPlatform(
        data_dir=tmp_path_factory.mktemp("platform-sites"),
        port=free_port(),
        sites=3,
        secret_key="sites-test-secret",
        heartbeat_s=1.0,
        heartbeat_timeout_s=8.0,
        reconcile_every_s=1.0,
        threads_per_job=1,
        site_args={
            "site-1": ["--dataset", f"pets={_npz(root / 'a', 40)}:npz"],
            "site-2": ["--dataset", f"pets={_npz(root / 'b', 24)}", "--require-approval"],
            "site-3": ["--settings", str(settings3)],
        },
    )
    try:
        plat.start()
        _wait_reports(plat)
        yield plat
    finally:
        plat.stop()


def _client(plat: LocalPlatform) -> Client:
    return Client(plat.url, plat.admin_token)


def _wait_reports(plat: LocalPlatform, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(s["policy"] is not None for s in _client(plat).sites()):
            return
        dead = plat.supervisor.dead()
        assert not dead, f"{dead[0].name} died:\n{plat.supervisor.tail(dead[0])}"
        time.sleep(0.5)
    raise AssertionError("the site workers never reported their datasets")


def _job(sites: list[str], dataset: str, min_clients: int | None = None) -> Job:
    return Job(
        name=f"on {dataset}",
        model=ModelConfig(source=MODEL_DEF, class_name="Net"),
        training=TrainingConfig(),
        federation=FederationConfig(
            num_rounds=1,
            sites=sites,
            dataset=dataset,
            min_clients=min_clients,
            round_timeout_s=300,
        ),  # fmt: skip
    )


def _wait(plat: LocalPlatform, job_id: int, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = _client(plat).status(job_id)
        if job["status"] in TERMINAL:
            return job
        dead = plat.supervisor.dead()
        assert not dead, f"{dead[0].name} died:\n{plat.supervisor.tail(dead[0])}"
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not end: {_client(plat).status(job_id)}")


def _results(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["site"]: r for r in job["rounds"][0]["results"]}


def test_each_site_reports_its_own_datasets(sites_platform: LocalPlatform) -> None:
    sites = {s["name"]: s for s in _client(sites_platform).sites()}
    assert [(d["name"], d["format"], d["samples"]) for d in sites["site-1"]["datasets"]] == [
        ("pets", "npz", 40)
    ]
    assert sites["site-2"]["datasets"][0]["labels"] == {"0": 8, "1": 8, "2": 8}
    assert [d["name"] for d in sites["site-3"]["datasets"]] == ["scans"]
    assert sites["site-2"]["policy"]["require_approval"] is True
    assert sites["site-3"]["policy"]["submitters"] == ["nobody@example.org"]


def test_a_job_trains_on_the_sites_dataset_read_only_and_a_site_without_it_refuses(
    sites_platform: LocalPlatform,
) -> None:
    job_id = _client(sites_platform).submit(_job(["site-1", "site-3"], "pets", min_clients=1))
    job = _wait(sites_platform, job_id)
    assert job["status"] == "finished", job
    results = _results(job)
    assert results["site-1"]["status"] == "done" and results["site-1"]["samples"] == 40
    # job code could neither change nor add a file in the site's data
    assert results["site-1"]["metrics"] == {"wrote_data": 0.0, "created_file": 0.0}
    assert results["site-3"]["status"] == "failed"
    assert "holds no dataset 'pets'" in results["site-3"]["error"]
    assert "its datasets: scans" in results["site-3"]["error"]


def site_cli(plat: LocalPlatform, site: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`resonfl site ...` as the site's operator runs it: the site's token, no other secret."""
    env = {**os.environ, "RESONFL_SITE_TOKEN": plat.site_tokens[site], "RESONFL_API_URL": plat.url}
    return subprocess.run(
        [sys.executable, "-m", "resonfl_server.launcher", "site", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def _wait_status(plat: LocalPlatform, job_id: int, status: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while _client(plat).status(job_id)["status"] != status:
        assert time.monotonic() < deadline, _client(plat).status(job_id)
        time.sleep(0.3)


def test_a_job_waits_for_the_sites_approval_and_runs_once_approved(
    sites_platform: LocalPlatform,
) -> None:
    job_id = _client(sites_platform).submit(_job(["site-1", "site-2"], "pets"))
    time.sleep(3)  # the aggregator would have started it by now
    job = _client(sites_platform).status(job_id)
    assert job["status"] == "queued"
    assert [(d["site"], d["status"]) for d in job["decisions"]] == [("site-2", "pending")]

    listed = site_cli(sites_platform, "site-2", "jobs")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(f"{job_id} "))
    assert "admin@localhost" in row and "pets" in row and "pending" in row
    shown = site_cli(sites_platform, "site-2", "show", str(job_id))
    assert f"job {job_id} 'on pets', submitted by admin@localhost" in shown.stdout
    for name in ("meta.json", "model_def.py", "custom_client_executor.py", "config_fed_server.json"):
        assert f"===== {name} =====" in shown.stdout
    assert "poisoned" in shown.stdout  # the operator reads the job code itself
    assert site_cli(sites_platform, "site-1", "jobs").stdout.startswith("no job awaits")

    approved = site_cli(sites_platform, "site-2", "approve", str(job_id), "--by", "ops-b")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == f"approved job {job_id} at site-2 (by ops-b)"
    job = _wait(sites_platform, job_id)
    assert job["status"] == "finished", job
    assert {s: r["samples"] for s, r in _results(job).items()} == {"site-1": 40, "site-2": 24}
    (decision,) = job["decisions"]
    assert (decision["status"], decision["operator"]) == ("approved", "ops-b")
    assert decision["decided_at"] is not None
    again = site_cli(sites_platform, "site-2", "approve", str(job_id))
    assert again.returncode == 2 and "already approved" in again.stderr


def test_a_rejection_that_leaves_too_few_sites_fails_the_job_with_the_reason(sites_platform: LocalPlatform) -> None:
    job_id = _client(sites_platform).submit(_job(["site-1", "site-2"], "pets"))
    _wait_status(sites_platform, job_id, "queued")
    no_reason = site_cli(sites_platform, "site-2", "reject", str(job_id))
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    outsider = site_cli(sites_platform, "site-3", "reject", str(job_id), "--reason", "x")
    assert outsider.returncode == 2 and "does not take part" in outsider.stderr
    rejected = site_cli(
        sites_platform, "site-2", "reject", str(job_id), "--reason", "not on patient data",
        "--by", "ops-b",
    )  # fmt: skip
    assert rejected.returncode == 0, rejected.stderr
    job = _client(sites_platform).status(job_id)
    assert job["status"] == "failed"
    assert job["error"] == "rejected by site-2 (ops-b): not on patient data"
    assert job["decisions"][0]["reason"] == "not on patient data"
    assert job["rounds"] == []  # nothing ran anywhere


def test_a_submitter_not_on_the_sites_list_is_refused(sites_platform: LocalPlatform) -> None:
    job_id = _client(sites_platform).submit(_job(["site-3"], "scans"))
    job = _wait(sites_platform, job_id)
    assert job["status"] == "failed"
    error = _results(job)["site-3"]["error"]
    assert "runs only jobs of nobody@example.org" in error
    assert "submitted by admin@localhost" in error
