"""Evaluate a checkpoint (``checkpoint.pt``, a round's global model) on your own held-out data.

The job's own eval function (``fl_evaluate_model(model, env, logger)`` in model_def.py) runs
with ``env.data_root`` set to your folder, in the same sandboxed child process a site's round
uses (job code never runs in this process). ``env.current_round`` is the job's round count, so
an eval function that skips the untrained round 0 still reports.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from resonfl.job import EXECUTOR, Job
from resonfl.runner import SandboxError, run_sandboxed
from resonfl.runner.confine import Binds
from resonfl.runner.tasks import stage_job


class EvaluationError(RuntimeError):
    """The checkpoint could not be evaluated (no eval function, a mismatch, a crash)."""


@dataclass
class Evaluation:
    metrics: dict[str, float]
    log: str


def evaluate_checkpoint(
    job_dir: str | Path, checkpoint: str | Path, data_root: str | Path, timeout_s: float = 600.0
) -> Evaluation:
    """Load ``checkpoint`` into the job's model and run its eval function on ``data_root``."""
    job_dir = Path(job_dir).resolve()
    job = Job.load(job_dir)
    ckpt = Path(checkpoint).resolve()
    data = Path(data_root).resolve()
    if not ckpt.is_file():
        raise EvaluationError(f"checkpoint {ckpt} not found")
    if not data.is_dir():
        raise EvaluationError(f"data folder {data} not found")
    with tempfile.TemporaryDirectory(prefix="resonfl-evaluate-") as tmp:
        work = Path(tmp)
        staged = stage_job(job_dir, work / "job")
        weights = work / ("weights" + (ckpt.suffix if ckpt.suffix == ".safetensors" else ".pt"))
        shutil.copyfile(ckpt, weights)
        rounds = job.federation.num_rounds
        task = {
            "job_dir": str(staged),
            "site": "evaluate",
            "round": rounds,
            "num_rounds": rounds,
            "weights_in": str(weights),
            "weights_out": str(work / "unused.safetensors"),
            "result_out": str(work / "result.json"),
            "out_dir": str(work / "out"),
            "data_root": str(data),
            "state_dir": str(work / "state"),
            "task_args": {},
            "mode": "evaluate",
        }
        task_path = work / "task.json"
        task_path.write_text(json.dumps(task), encoding="utf-8")
        argv = [sys.executable, str(staged / EXECUTOR), "--task", str(task_path)]
        try:
            # the data folder is the user's own: the confined process sees it read-only
            run = run_sandboxed(argv, work, timeout_s, binds=Binds.of(ro=[data]))
        except SandboxError as exc:
            raise EvaluationError(f"{exc}\n{exc.log[-2000:]}") from None
        result_path = work / "result.json"
        result = json.loads(result_path.read_text("utf-8")) if result_path.is_file() else {}
        if run.returncode != 0 or "error" in result or "metrics" not in result:
            reason = result.get("error") or f"the evaluation exited with {run.returncode}"
            raise EvaluationError(f"{reason}\n{run.log[-2000:]}")
        return Evaluation(metrics=dict(result["metrics"]), log=run.log)


__all__ = ["Evaluation", "EvaluationError", "evaluate_checkpoint"]
