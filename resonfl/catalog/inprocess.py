"""A fast in-process FedAvg loop over a rendered job, for benchmarks and tests.

Each site's round goes through the job's own ``custom_client_executor.run_task`` (the same
code the child process runs: task JSON fields, weights files in and out, result file), but
in this process, so a 20-round, 4-site run costs no interpreter start-ups. The rounds are the
FL core's one loop (`resonfl.fl.rounds.fold_round`), as in the simulator and on the platform.
It has no sandbox, time limit or files_out layout: use `resonfl.simulate` for a real local run.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from resonfl.fl.rounds import SiteUpdate, fold_round
from resonfl.fl.shareable import load_weights, save_weights
from resonfl.job import EXECUTOR, Job

StateDict = dict[str, torch.Tensor]


@dataclass
class InProcessRun:
    """The final global weights and, per round, the samples-weighted mean of site metrics."""

    state: StateDict
    rounds: list[dict[str, float]] = field(default_factory=list)
    stopped: str | None = None  # why the run ended before its last round (a privacy budget)


def load_executor(job_dir: Path) -> ModuleType:
    """Import the job folder's own custom_client_executor.py."""
    path = Path(job_dir) / EXECUTOR
    spec = importlib.util.spec_from_file_location("resonfl_job_executor", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_model(job: Job, job_dir: Path, seed: int) -> torch.nn.Module:
    """A fresh model from the job's model_def.py, initialized under `seed`."""
    path = Path(job_dir) / "model_def.py"
    spec = importlib.util.spec_from_file_location("model_def", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["model_def"] = module
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    return getattr(module, job.model.class_name)(**job.model.args)  # type: ignore[no-any-return]


def initial_state(job: Job, job_dir: Path, seed: int) -> StateDict:
    """The state dict of a fresh model (see `build_model`)."""
    model = build_model(job, job_dir, seed)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def run_in_process(
    job_dir: str | Path,
    workspace: str | Path,
    num_rounds: int | None = None,
    task_args: dict[str, Any] | None = None,
    init_state: StateDict | None = None,
) -> InProcessRun:
    """Run every round of a rendered job (its workflow and aggregator); return the final weights.

    Each round is the FL core's loop (`resonfl.fl.rounds.fold_round`) with no persistor: a site
    trains when the loop asks for its update, so updates are folded one at a time.
    """
    job_dir = Path(job_dir).resolve()
    work = Path(workspace).resolve()
    job = Job.load(job_dir)
    executor = load_executor(job_dir)
    rounds = num_rounds or job.federation.num_rounds
    job.federation.num_rounds = rounds
    workflow = job.build_workflow()
    aggregator = job.build_aggregator()
    model = build_model(job, job_dir, job.training.seed)
    aggregator.bind_model(model)  # FedOpt: parameters vs buffers
    state = init_state or {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    run = InProcessRun(state=state)
    logger = executor.make_logger("inprocess")
    logger.setLevel("WARNING")
    sites = list(job.federation.sites)
    for rnd in range(rounds):
        global_path = work / "global" / f"round_{rnd}.safetensors"
        save_weights(run.state, global_path)
        args = {**aggregator.client_args(), **(task_args or {})}
        chosen = workflow.sites_for_round(rnd, sites)
        aggregator.expect_sites(chosen)  # SecAgg: keys are agreed before any update
        updates = (
            _train(executor, logger, job_dir, work, site, rnd, rounds, global_path, args)
            for site in chosen
        )
        outcome = fold_round(
            aggregator,
            run.state,
            rnd,
            updates,
            needed=workflow.min_results(rnd, sites),
            final=rnd + 1 == rounds,
        )
        run.state = outcome.weights
        run.rounds.append({"round": rnd, **outcome.metrics})
        if outcome.stopped is not None:
            run.stopped = outcome.stopped
            break
    return run


def _train(
    executor: ModuleType,
    logger: Any,
    job_dir: Path,
    work: Path,
    site: str,
    rnd: int,
    rounds: int,
    global_path: Path,
    task_args: dict[str, Any],
) -> SiteUpdate:
    """One site's round through the executor's own ``run_task``, as the child process runs it."""
    site_dir = work / "sites" / site
    task: dict[str, Any] = {
        "job_dir": str(job_dir),
        "site": site,
        "round": rnd,
        "num_rounds": rounds,
        "weights_in": str(global_path),
        "weights_out": str(site_dir / f"round_{rnd}.safetensors"),
        "result_out": str(site_dir / f"round_{rnd}.json"),
        "out_dir": str(site_dir / "out"),
        "data_root": str(job_dir / "shards" / site),
        "state_dir": str(site_dir / "state"),
        "task_args": dict(task_args),
    }
    result = executor.run_task(task, logger)
    if "error" in result:
        raise RuntimeError(f"{site} round {rnd}: {result['error']}")
    written = json.loads(Path(task["result_out"]).read_text(encoding="utf-8"))
    metrics = {
        k: float(v)
        for k, v in written.get("metrics", {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    return SiteUpdate(
        site=site,
        samples=int(written["samples"]),
        metrics=metrics,
        load=functools.partial(load_weights, task["weights_out"]),
    )
