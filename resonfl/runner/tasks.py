"""The two things job code is run for: one site's round, and the persistor's initial weights.

Both stage the job's files into the run's own folder first (job code never runs in place)."""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resonfl.job import CLIENT_CONFIG, EXECUTOR, META, MODEL_DEF, PERSISTOR, SERVER_CONFIG
from resonfl.runner.confine import Binds
from resonfl.runner.errors import SandboxError
from resonfl.runner.pool import WarmPool
from resonfl.runner.run import run_sandboxed
from resonfl.runner.session import JobSession


JOB_SCRIPTS = (MODEL_DEF, EXECUTOR, PERSISTOR, CLIENT_CONFIG, SERVER_CONFIG, META)


@dataclass
class SiteRoundResult:
    weights_path: Path
    samples: int
    metrics: dict[str, float]
    train_s: float
    duration_s: float
    log: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # the executor's own phases (import_s, build_s, data_s, train_s, eval_s, save_s,
    # executor_s), and whether this round had to start the job process
    phases: dict[str, float] = field(default_factory=dict)
    started_process: bool = True


def stage_job(job_dir: Path, target: Path) -> Path:
    """Copy the job's scripts and configs into the run's own folder (never run in place)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in JOB_SCRIPTS:
        shutil.copyfile(job_dir / name, target / name)
    for ckpt in ("model_checkpoint.safetensors", "model_checkpoint.pt"):
        if (job_dir / ckpt).is_file():
            shutil.copyfile(job_dir / ckpt, target / ckpt)
    return target


class WarmInit:
    """A job process started ahead of time for the next initial-weights step (the aggregator
    keeps one, so a job's start does not pay Python + torch; seconds on a small machine).

    A confined process sees only the folders it was started with, so the step's work folder
    is chosen in advance (a fresh "slot" per process) and `take` hands both out together;
    the next process starts at once for the next job."""

    ENV = {"CUDA_VISIBLE_DEVICES": ""}  # the server builds the initial model on the CPU

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.pool = WarmPool(size=1, refill=False)
        self._slot: Path | None = None
        self.fill()

    def fill(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        slot = self.root / f"init-{uuid.uuid4().hex[:12]}"
        slot.mkdir()
        self._slot = slot
        self.pool.fill(self.ENV, wait=False, binds=Binds.of(rw=[slot]))

    def take(self) -> Path:
        """The work folder a pre-started process can see (when one is ready); the caller
        removes it after the step."""
        slot = self._slot
        if slot is None or not slot.is_dir():
            self.fill()
            slot = self._slot
        assert slot is not None
        self._slot = None
        return slot

    def close(self) -> None:
        self.pool.close()
        if self._slot is not None:
            shutil.rmtree(self._slot, ignore_errors=True)


@dataclass
class InitResult:
    """The initial weights, and where the step's time went (schemas.phases.InitPhases)."""

    path: Path
    phases: dict[str, float | bool]


def init_global_weights(
    job_dir: str | Path,
    out_path: str | Path,
    work_dir: str | Path,
    timeout_s: float = 600.0,
    warm: WarmInit | None = None,
) -> InitResult:
    """Run the job's persistor in the sandbox to produce the initial weights (safetensors).

    With ``warm`` the step runs in its pre-started process, in that process's folder (then
    ``work_dir`` is not used); its replacement starts right after."""
    began = time.monotonic()
    if warm is not None:
        work_dir = warm.take()
    work = Path(work_dir).resolve()
    staged = stage_job(Path(job_dir).resolve(), work / "job")
    out = Path(out_path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written inside the run's own folder (all the sandbox can write), then copied out.
    inside = work / "initial.safetensors"
    inside.unlink(missing_ok=True)
    argv = [sys.executable, str(staged / PERSISTOR), "init", "--job-dir", str(staged)]
    pool = warm.pool if warm is not None else None
    expected = pool is not None and pool.has_idle(WarmInit.ENV, Binds.of(rw=[work]))
    try:
        run = run_sandboxed(
            argv + ["--out", str(inside)], work, timeout_s, dict(WarmInit.ENV), pool=pool
        )
    finally:
        if warm is not None:
            warm.fill()
    if run.returncode != 0 or not inside.is_file():
        raise SandboxError(_last_error(run.log, "building the initial model failed"), run.log)
    shutil.copyfile(inside, out)
    own = _read_result(inside.with_name(inside.name + ".phases.json"))
    if warm is not None:
        shutil.rmtree(work, ignore_errors=True)  # the slot was for this one step
    phases: dict[str, float | bool] = {
        k: max(float(own[k]), 0.0) for k in ("build_s", "save_s") if _is_number(own.get(k))
    }
    in_process = sum(float(v) for v in phases.values())
    phases.update(
        process_s=max(run.duration_s - in_process, 0.0),
        warm=expected,
        total_s=time.monotonic() - began,
    )
    return InitResult(out, phases)


def run_site_round(
    job_dir: str | Path,
    site: str,
    round_num: int,
    num_rounds: int,
    weights_in: str | Path,
    work_dir: str | Path,
    data_root: str | Path,
    state_dir: str | Path,
    timeout_s: float,
    task_args: dict[str, Any] | None = None,
    env_extra: dict[str, str] | None = None,
    pool: WarmPool | None = None,
    should_stop: Callable[[], str | None] | None = None,
    session: JobSession | None = None,
) -> SiteRoundResult:
    """Train one site for one round in the sandbox; return its update and metrics.

    With a ``session`` (this job on this site) the round runs in the job's long-lived process
    (`JobSession`); else in a process of its own (pre-started by ``pool`` when given)."""
    work = Path(work_dir).resolve()
    if work.exists():
        shutil.rmtree(work)
    staged = stage_job(Path(job_dir).resolve(), work / "job")
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    out_dir = work / "out"
    out_dir.mkdir()
    task = {
        "job_dir": str(staged),
        "site": site,
        "round": round_num,
        "num_rounds": num_rounds,
        "weights_in": str(Path(weights_in).resolve()),
        "weights_out": str(work / "update.safetensors"),
        "result_out": str(work / "result.json"),
        "out_dir": str(out_dir),
        "data_root": str(Path(data_root).resolve()),
        "state_dir": str(state),
        "task_args": dict(task_args or {}),
    }
    task_path = work / "task.json"
    task_path.write_text(json.dumps(task, indent=2), encoding="utf-8")
    # What the job process sees: this round's folder and the job's STATE_DIR (read-write), its
    # data and the global weights (read-only); nothing else of this machine's files.
    binds = Binds.of(rw=[work, state], ro=[str(task["data_root"]), str(task["weights_in"])])
    starts = session.starts if session is not None else 0
    if session is not None:
        run = session.run_round(
            staged / EXECUTOR, task_path, work, round_num, timeout_s, should_stop=should_stop,
            binds=binds,
        )
    else:
        run = run_sandboxed(
            [sys.executable, str(staged / EXECUTOR), "--task", str(task_path)],
            work,
            timeout_s,
            env_extra,
            pool=pool,
            should_stop=should_stop,
            binds=binds,
        )
    result = _read_result(work / "result.json")
    if run.returncode != 0 or "error" in result or not (work / "update.safetensors").is_file():
        reason = result.get("error") or _last_error(run.log, f"exit code {run.returncode}")
        raise SandboxError(f"site {site} round {round_num}: {reason}", run.log)
    try:
        samples = int(result["samples"])
    except (KeyError, TypeError, ValueError):
        raise SandboxError(f"site {site}: result has no integer 'samples'", run.log) from None
    if samples <= 0:
        raise SandboxError(f"site {site}: reported {samples} samples", run.log)
    metrics = {
        k: float(v) for k, v in (result.get("metrics") or {}).items() if _is_number(v)
    }
    return SiteRoundResult(
        weights_path=work / "update.safetensors",
        samples=samples,
        metrics=metrics,
        train_s=float(result.get("train_s", run.duration_s)),
        duration_s=run.duration_s,
        log=run.log,
        phases={k: float(v) for k, v in (result.get("phases") or {}).items() if _is_number(v)},
        started_process=session is None
        or (session.starts > starts and not session.last_start_warm),
    )


def _is_number(value: Any) -> bool:
    """A finite int or float: NaN/inf metrics (a diverged site) are dropped, not averaged."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _read_result(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"error": "result.json is not valid JSON"}
    return data if isinstance(data, dict) else {"error": "result.json is not an object"}


def _last_error(log: str, default: str) -> str:
    lines = [line for line in log.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else default
