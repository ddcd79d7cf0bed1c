"""The local simulator: same runner, same aggregators, same output layout as the platform."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resonfl.config import FederationConfig, ModelConfig
from resonfl.job import Job, JobValidationError
from resonfl.simulate import SimulationError, simulate
from resonfl.templates.custom_persistor import load_state_dict_file

FAIL_ON_SITE_2 = '''
import os
_train = fl_train_model


def fl_train_model(model, env, out_dir, logger):
    if os.environ["SITE_NAME"] == "site-2":
        raise RuntimeError("disk on fire")
    return _train(model, env, out_dir, logger)
'''


def render(tmp_path: Path, source: str, min_clients: int | None = None) -> Path:
    sites = ["site-1", "site-2"]
    for site in sites:
        (tmp_path / "data" / site).mkdir(parents=True)
    job = Job(
        name="tiny",
        model=ModelConfig(source=source),
        federation=FederationConfig(num_rounds=2, sites=sites, min_clients=min_clients),
        shards={s: tmp_path / "data" / s for s in sites},
    )
    return job.render(tmp_path / "job")


def test_simulation_writes_every_round_and_a_loadable_checkpoint(tmp_path: Path, tiny_model_def: str) -> None:
    job_dir = render(tmp_path, tiny_model_def)

    result = simulate(job_dir, tmp_path / "ws", progress=False)

    files = sorted(p.name for p in (tmp_path / "ws" / "files_out").iterdir())
    assert files == ["GLOBAL_MODEL.pt", "GLOBAL_MODEL_round_0.pt", "GLOBAL_MODEL_round_1.pt"]
    final = load_state_dict_file(result.checkpoint)
    assert torch.equal(final["fc1.weight"], load_state_dict_file(tmp_path / "ws" / "files_out" / "GLOBAL_MODEL_round_1.pt")["fc1.weight"])
    assert [r.samples for r in result.rounds] == [{"site-1": 32, "site-2": 32}] * 2
    assert "trained on 32 samples" in (tmp_path / "ws" / "logs" / "site-1.log").read_text()


def test_a_failed_site_is_recorded_and_the_round_goes_on_with_min_clients(tmp_path: Path, tiny_model_def: str) -> None:
    job_dir = render(tmp_path, tiny_model_def + FAIL_ON_SITE_2, min_clients=1)

    result = simulate(job_dir, tmp_path / "ws", progress=False)

    assert all("disk on fire" in r.failed["site-2"] for r in result.rounds)
    assert result.checkpoint.is_file()


def test_too_few_sites_fails_the_simulation_with_the_reason(tmp_path: Path, tiny_model_def: str) -> None:
    job_dir = render(tmp_path, tiny_model_def + FAIL_ON_SITE_2)

    with pytest.raises(SimulationError, match="disk on fire"):
        simulate(job_dir, tmp_path / "ws", progress=False)


NAN_METRIC = '''
_train_ok = fl_train_model


def fl_train_model(model, env, out_dir, logger):
    result = _train_ok(model, env, out_dir, logger)
    result["metrics"]["val_loss"] = float("nan")
    return result
'''


def test_non_finite_metrics_are_dropped_not_averaged(tmp_path: Path, tiny_model_def: str) -> None:
    job_dir = render(tmp_path, tiny_model_def + NAN_METRIC)

    result = simulate(job_dir, tmp_path / "ws", num_rounds=1, progress=False)

    assert "val_loss" not in result.rounds[0].metrics
    assert "train_loss" in result.rounds[0].metrics


CUSTOM_BUFFER = '''
_train_plain = fl_train_model


class Normalised(Net):
    """Net plus a registered float buffer that is not BatchNorm's (an input mean)."""

    def __init__(self, width: int = 8):
        super().__init__(width)
        self.register_buffer("input_mean", torch.zeros(4))


def fl_train_model(model, env, out_dir, logger):
    model.input_mean.fill_(700.0)  # what a site computes from its data
    return _train_plain(model, env, out_dir, logger)
'''


def test_fedadam_averages_a_custom_buffer_found_from_the_model(
    tmp_path: Path, tiny_model_def: str
) -> None:
    # Prepare: a model whose float buffer has a name no suffix list knows
    for site in ("site-1", "site-2"):
        (tmp_path / "data" / site).mkdir(parents=True)
    job = Job(
        name="buffers",
        model=ModelConfig(source=tiny_model_def + CUSTOM_BUFFER, class_name="Normalised"),
        federation=FederationConfig(
            num_rounds=2,
            sites=["site-1", "site-2"],
            aggregator_path="resonfl.fl.fedopt.FedAdam",
        ),
        shards={s: tmp_path / "data" / s for s in ("site-1", "site-2")},
    )
    # Execute
    result = simulate(job.render(tmp_path / "job"), tmp_path / "ws", progress=False)
    # Assert: averaged to 700 (a server-Adam step would have moved it by about server_lr)
    final = load_state_dict_file(result.checkpoint)
    assert torch.equal(final["input_mean"], torch.full((4,), 700.0))
    assert not torch.equal(final["fc1.weight"], torch.zeros_like(final["fc1.weight"]))


STATE_PROBE = '''
_train_probe = fl_train_model


def fl_train_model(model, env, out_dir, logger):
    """Report what STATE_DIR held when the round began, then leave a file there."""
    found = sorted(p.name for p in env.state_dir.iterdir())
    (env.state_dir / "probe.txt").write_text(str(env.current_round))
    result = _train_probe(model, env, out_dir, logger)
    result["metrics"]["state_files"] = len(found)
    return result
'''


def test_a_rerun_in_the_same_workspace_starts_clean(tmp_path: Path, tiny_model_def: str) -> None:
    # Prepare: one finished run in the workspace
    job_dir = render(tmp_path, tiny_model_def + STATE_PROBE)
    first = simulate(job_dir, tmp_path / "ws", progress=False)
    first_run = (tmp_path / "ws" / "run.json").read_text()
    # Execute
    second = simulate(job_dir, tmp_path / "ws", progress=False)
    # Assert: round 0 of the second run saw an empty STATE_DIR, and a log of its own
    assert first.rounds[1].metrics["state_files"] == 1
    assert second.rounds[0].metrics["state_files"] == 0
    assert (tmp_path / "ws" / "logs" / "site-1.log").read_text().count("===== round 0") == 1
    assert (tmp_path / "ws" / "run.json").read_text() != first_run


def test_a_workspace_holding_other_files_is_refused_naming_the_flag(
    tmp_path: Path, tiny_model_def: str
) -> None:
    job_dir = render(tmp_path, tiny_model_def)
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "thesis.tex").write_text("precious")

    with pytest.raises(SimulationError, match="--workspace"):
        simulate(job_dir, tmp_path / "ws", progress=False)
    assert (tmp_path / "ws" / "thesis.tex").read_text() == "precious"


def test_the_images_example_trains_on_each_sites_own_folder_with_loader_workers_in_the_sandbox(
    tmp_path: Path,
) -> None:
    """Data at the sites: each site's class folders (PNG, read lazily with Pillow by two
    DataLoader worker processes inside the job's sandbox), no shards in the job."""
    from resonfl.catalog import evaluate_on_test, get_example, make_job
    from resonfl.catalog.shards import make_shards

    spec = {**get_example("images").dataset, "n_per_class": 40}
    folders = make_shards(spec, tmp_path / "data", 2, split="iid", verbose=False)
    job = make_job("images", 2, num_rounds=1, local_steps=6, warmup_steps=2)
    assert job.federation.dataset == "images" and job.shards == {}
    assert job.training.loader_workers == 2
    job.render(tmp_path / "job")
    result = simulate(tmp_path / "job", tmp_path / "ws", progress=False, data_roots=folders)
    (summary,) = result.rounds
    assert len(summary.sites) == 2 and summary.metrics["train_loss"] > 0
    log = (tmp_path / "ws" / "logs" / "site-1.log").read_text()
    assert "(lazy, Pillow)" in log
    held_out = evaluate_on_test("images", result.checkpoint, tmp_path / "data")
    assert 0.0 <= held_out["top1"] <= 1.0 and held_out["val_loss"] > 0
    with pytest.raises(JobValidationError, match="simulate --data site-1="):
        simulate(tmp_path / "job", tmp_path / "ws2", progress=False)
