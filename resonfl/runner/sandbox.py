"""Run untrusted job code in a child process: scrubbed environment, own folder, time limit.

Job code (model_def.py and the job's scripts) never runs inside a platform process. Each call
starts a fresh Python (never a fork, so CUDA initialises cleanly), in its own session so the
whole process tree can be killed on timeout, with an environment rebuilt from an allow-list:
no tokens, database URLs or other server secrets reach it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resonfl.job import CLIENT_CONFIG, EXECUTOR, META, MODEL_DEF, PERSISTOR, SERVER_CONFIG

# Variables a job process may inherit; everything else is dropped.
ALLOWED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")
JOB_SCRIPTS = (MODEL_DEF, EXECUTOR, PERSISTOR, CLIENT_CONFIG, SERVER_CONFIG, META)
MAX_LOG_BYTES = 2 * 1024 * 1024


class SandboxError(RuntimeError):
    """Job code failed; ``log`` holds what it printed."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


class SandboxTimeout(SandboxError):
    """Job code ran past its time limit and was killed."""


@dataclass
class SandboxRun:
    returncode: int
    log: str
    duration_s: float


@dataclass
class SiteRoundResult:
    weights_path: Path
    samples: int
    metrics: dict[str, float]
    train_s: float
    duration_s: float
    log: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def scrubbed_env(work_dir: Path, env_extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in ALLOWED_ENV if k in os.environ}
    tmp = work_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(work_dir),
        TMPDIR=str(tmp),
        PYTHONNOUSERSITE="1",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        PYTHONHASHSEED="0",
        MPLCONFIGDIR=str(tmp),
    )
    env.update(env_extra or {})
    return env


def run_sandboxed(
    argv: list[str],
    work_dir: Path,
    timeout_s: float,
    env_extra: dict[str, str] | None = None,
    log_path: Path | None = None,
) -> SandboxRun:
    """Run ``argv`` with cwd ``work_dir``; capture stdout+stderr; kill the tree on timeout."""
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or work_dir / "job.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=work_dir,
            env=scrubbed_env(work_dir, env_extra),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_die_with_parent,
        )
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            text = _read_log(log_path)
            raise SandboxTimeout(f"job code ran past its time limit of {timeout_s:g} s", text) from None
        except BaseException:
            _kill_tree(proc)
            raise
        finally:
            # A job may leave children behind in its session; never let them outlive the run.
            _kill_group(proc.pid)
    return SandboxRun(returncode, _read_log(log_path), time.monotonic() - started)


def _die_with_parent() -> None:
    """Linux: the job process gets SIGKILL when the worker that started it dies (even by
    SIGKILL), so a killed site worker never leaves a job training on behind its back."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    _kill_group(proc.pid)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _read_log(path: Path) -> str:
    if not path.exists():
        return ""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if size > MAX_LOG_BYTES:
            fh.seek(size - MAX_LOG_BYTES)
        return fh.read().decode("utf-8", errors="replace")


def stage_job(job_dir: Path, target: Path) -> Path:
    """Copy the job's scripts and configs into the run's own folder (never run in place)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in JOB_SCRIPTS:
        shutil.copyfile(job_dir / name, target / name)
    for ckpt in ("model_checkpoint.safetensors", "model_checkpoint.pt"):
        if (job_dir / ckpt).is_file():
            shutil.copyfile(job_dir / ckpt, target / ckpt)
    return target


def init_global_weights(
    job_dir: str | Path, out_path: str | Path, work_dir: str | Path, timeout_s: float = 600.0
) -> Path:
    """Run the job's persistor in the sandbox to produce the initial weights (safetensors)."""
    work = Path(work_dir).resolve()
    staged = stage_job(Path(job_dir).resolve(), work / "job")
    out = Path(out_path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(staged / PERSISTOR), "init", "--job-dir", str(staged)]
    run = run_sandboxed(argv + ["--out", str(out)], work, timeout_s)
    if run.returncode != 0 or not out.is_file():
        raise SandboxError(_last_error(run.log, "building the initial model failed"), run.log)
    return out


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
) -> SiteRoundResult:
    """Train one site for one round in the sandbox; return its update and metrics."""
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
    run = run_sandboxed(
        [sys.executable, str(staged / EXECUTOR), "--task", str(task_path)],
        work,
        timeout_s,
        env_extra,
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
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
