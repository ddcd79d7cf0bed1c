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
from launcher.local import LocalPlatform

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

    status = resonfl(platform, "status", job_id)
    final = resonfl(platform, "download", job_id, "-o", str(tmp_path / "final.pt"))
    first = resonfl(platform, "download", job_id, "--round", "0", "-o", str(tmp_path / "r0.pt"))

    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["status"] == "finished" and len(info["rounds"]) == 2
    assert final.returncode == 0 and first.returncode == 0, final.stderr + first.stderr
    weights = torch.load(tmp_path / "final.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())
    assert torch.load(tmp_path / "r0.pt", weights_only=True).keys() == weights.keys()


def test_status_of_a_missing_job_is_a_clear_error(platform: LocalPlatform) -> None:
    out = resonfl(platform, "status", "999999")

    assert out.returncode != 0
    assert "999999" in out.stderr or "not found" in out.stderr.lower()
    assert "Traceback" not in out.stderr
