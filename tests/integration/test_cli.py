"""The issue's own command line: init a catalog example, simulate it, load the checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from resonfl.job import Job
from resonfl.templates.custom_persistor import load_state_dict_file


def resonfl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resonfl.cli", *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_init_then_simulate_writes_every_round_and_a_checkpoint_that_loads(tmp_path: Path) -> None:
    init = resonfl("init", "--example", "digits", "J", "--sites", "2", cwd=tmp_path)
    assert init.returncode == 0, init.stderr

    sim = resonfl("simulate", "J", "--sites", "2", "--rounds", "2", cwd=tmp_path)

    assert sim.returncode == 0, sim.stderr
    assert "round 2/2" in sim.stderr + sim.stdout
    files_out = tmp_path / "J" / "workspace" / "files_out"
    assert {p.name for p in files_out.iterdir()} == {
        "GLOBAL_MODEL.pt", "GLOBAL_MODEL_round_0.pt", "GLOBAL_MODEL_round_1.pt"
    }
    job = Job.load(tmp_path / "J")
    namespace: dict[str, object] = {}
    exec(compile(job.model.source, "model_def.py", "exec"), namespace)  # our own catalog code
    model = namespace[job.model.class_name](**job.model.args)  # type: ignore[operator]
    model.load_state_dict(load_state_dict_file(tmp_path / "J" / "workspace" / "model_out" / "checkpoint.pt"))
    assert isinstance(model, torch.nn.Module)

    # the final checkpoint on held-out data, through the job's own eval function
    checkpoint = "J/workspace/model_out/checkpoint.pt"
    evaluated = resonfl("evaluate", checkpoint, "--job", "J", "--data", "J/shards/site-1", "--json", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert 0.0 <= metrics["top1"] <= 1.0 and metrics["val_loss"] > 0


def test_evaluate_without_data_names_the_folder(tmp_path: Path) -> None:
    assert resonfl("init", "--example", "tabular", "J", "--sites", "2", cwd=tmp_path).returncode == 0
    (tmp_path / "ckpt.pt").write_bytes(b"")

    out = resonfl("evaluate", "ckpt.pt", "--job", "J", "--data", "nowhere", cwd=tmp_path)

    assert out.returncode == 1
    assert "nowhere not found" in out.stderr and "Traceback" not in out.stderr


def test_validate_names_the_file_and_field_of_a_broken_job(tmp_path: Path) -> None:
    assert resonfl("init", "--example", "tabular", "J", "--sites", "2", cwd=tmp_path).returncode == 0
    meta = tmp_path / "J" / "config_fed_server.json"
    meta.write_text(meta.read_text().replace("resonfl.fl.fedavg.FedAvg", "resonfl.fl.fedavg.Nope"))

    out = resonfl("validate", "J", cwd=tmp_path)

    assert out.returncode == 2
    assert "config_fed_server.json: aggregator_path" in out.stderr


def test_simulate_with_more_sites_than_the_job_has_says_what_to_do(tmp_path: Path) -> None:
    assert resonfl("init", "--example", "tabular", "J", "--sites", "2", cwd=tmp_path).returncode == 0

    out = resonfl("simulate", "J", "--sites", "4", cwd=tmp_path)

    assert out.returncode == 2
    assert "resonfl init --sites 4" in out.stderr
