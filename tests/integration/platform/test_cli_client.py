"""The CLI's client side against the real platform: submit --wait, status, download."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resonfl.catalog import make_job
from resonfl_server.launcher.local import LocalPlatform

pytestmark = pytest.mark.integration


def resonfl(plat: LocalPlatform, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RESONFL_SERVER": plat.url, "RESONFL_TOKEN": plat.admin_token}
    return subprocess.run(
        [sys.executable, "-m", "resonfl.cli", *args],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )


def test_submit_wait_status_and_download_from_the_command_line(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    job_dir = tmp_path / "J"
    make_job("tabular", sites=2, num_rounds=2, shards_dir=job_dir / "shards", local_steps=5).render(job_dir)

    submitted = resonfl(platform, "submit", str(job_dir), "--wait")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]

    status = resonfl(platform, "status", job_id, "--json")
    summary = resonfl(platform, "status", job_id)
    final = resonfl(platform, "download", job_id, "-o", str(tmp_path / "final.pt"))
    first = resonfl(platform, "download", job_id, "--round", "0", "-o", str(tmp_path / "r0.pt"))

    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["status"] == "finished" and len(info["rounds"]) == 2
    assert summary.stdout.splitlines()[0].endswith("finished, round 2/2"), summary.stdout
    assert "site-1: round 2 done: top1=" in summary.stdout
    assert final.returncode == 0 and first.returncode == 0, final.stderr + first.stderr
    weights = torch.load(tmp_path / "final.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())
    assert torch.load(tmp_path / "r0.pt", weights_only=True).keys() == weights.keys()


def test_status_of_a_missing_job_is_a_clear_error(platform: LocalPlatform) -> None:
    out = resonfl(platform, "status", "999999")

    assert out.returncode != 0
    assert "999999" in out.stderr or "not found" in out.stderr.lower()
    assert "Traceback" not in out.stderr


def test_jobs_logs_and_cancel_from_the_command_line(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    job_dir = tmp_path / "J"
    make_job("tabular", sites=2, num_rounds=50, shards_dir=job_dir / "shards", local_steps=5).render(job_dir)
    submitted = resonfl(platform, "submit", str(job_dir))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]

    listed = resonfl(platform, "jobs")
    cancelled = resonfl(platform, "cancel", job_id)
    logs = resonfl(platform, "logs", job_id, "--site", "site-2", "--follow", "--poll", "0.2")

    assert listed.returncode == 0 and any(
        line.split()[0] == job_id for line in listed.stdout.splitlines()[1:]
    ), listed.stdout
    assert cancelled.returncode == 0 and cancelled.stdout.strip() == f"job {job_id}: cancelled"
    assert logs.returncode == 0, logs.stderr  # --follow returns once the job has ended
    assert "site-1" not in logs.stdout


def test_a_job_naming_unknown_sites_is_refused_at_submit(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    job = make_job("tabular", sites=2, num_rounds=1, shards_dir=tmp_path / "src")
    job.federation.sites = ["site-1", "site-404"]
    job.shards = {"site-1": job.shards["site-1"]}
    job.render(tmp_path / "J")

    out = resonfl(platform, "submit", str(tmp_path / "J"))

    assert out.returncode == 1
    assert "meta.json: sites: sites not registered on this server: site-404" in out.stderr
