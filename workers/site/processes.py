"""This worker's job processes: one pre-started warm process, one kept process per job,
and whether a round is running now (what the heartbeat reports)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from resonfl.runner import SessionPool, WarmPool
from resonfl_server.workers.site.config import SiteConfig


@dataclass
class SiteState:
    """What the heartbeat reports: busy while a round runs."""

    busy: bool = False
    current: tuple[int, int] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


STATE = SiteState()
_POOL: Any = None


def warm_pool() -> Any:
    """Job processes pre-started with torch imported, shared by this worker's rounds."""
    global _POOL
    if _POOL is None:
        # One is enough once a round lasts longer than a start (a few seconds). Rounds of about
        # a second (the tiny digits demo on 2 cores) outrun it either way: every 2nd (size 1)
        # or 3rd (size 2) round finds its process still importing; the median is the same.
        _POOL = WarmPool(size=1)
    return _POOL


_SESSIONS: Any = None


def prewarm(cfg: SiteConfig) -> None:
    """Start a job process (Python + torch imported) now, before any job arrives, so that a
    job's first round on this site does not pay for it (seconds on a small machine). A
    confined process sees only the folders it was started with, so under bubblewrap a job
    uses the one `prepare_process` starts for it once its folders are known instead."""
    warm_pool().fill(job_env(cfg, cfg.visible_gpus()), wait=False)


_PREPARED: dict[int, tuple[dict[str, str], Any]] = {}


def prepare_process(job_id: int, env: dict[str, str], binds: Any) -> None:
    """Start the job's process now (its folders known: the job is starting), so its first
    round takes it warm; stopped by `close_job_process` if the job never uses it."""
    _PREPARED[job_id] = (env, binds)
    warm_pool().fill(env, wait=False, binds=binds)


def job_sessions() -> Any:
    """One job process per job, kept across that job's rounds on this site (closed when the
    job ends, when another job's round takes its place, or after 10 idle minutes)."""
    global _SESSIONS
    if _SESSIONS is None:
        # One at a time: a job between rounds must not hold a GPU another job's round needs.
        _SESSIONS = SessionPool(warm_pool(), idle_timeout_s=600.0, max_sessions=1)
    return _SESSIONS


def close_job_process(job_id: int) -> None:
    if _SESSIONS is not None:
        _SESSIONS.close_job(str(job_id))
    prepared = _PREPARED.pop(job_id, None)
    if prepared is not None:
        warm_pool().discard(*prepared)


def job_keys() -> list[str]:
    """The jobs that hold a kept process on this site now."""
    return [] if _SESSIONS is None else list(_SESSIONS.job_keys())


def job_env(cfg: SiteConfig, gpus: list[dict[str, Any]]) -> dict[str, str]:
    env = {"CUDA_VISIBLE_DEVICES": ",".join(str(g["index"]) for g in gpus)}
    if cfg.threads:
        env.update(OMP_NUM_THREADS=str(cfg.threads), MKL_NUM_THREADS=str(cfg.threads))
    return env
