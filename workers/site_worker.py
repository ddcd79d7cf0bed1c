"""A site worker's side of a round: everything over HTTP with the site token, no database.

`train_round` fetches the job bundle once per job (cached under the worker's data root),
fetches the round's global weights and checks their sha256, runs the job's round in the
sandboxed runner (a child process of that job's own, kept across its rounds, that sees
neither the site token nor any server secret, and only this worker's GPUs), and uploads the update with its samples, metrics and
log. A heartbeat thread tells the server the worker is alive and idle or busy.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from resonfl.archives import safe_extract
from resonfl.http import NO_RETRY, ApiClient, RetryPolicy, raise_if_retryable
from resonfl.job import Job
from resonfl.runner import (
    SandboxCancelled,
    SandboxError,
    SessionPool,
    WarmPool,
    run_site_round,
)
from resonfl.runner import confine
from resonfl.runner.confine import Binds
from workers.client_state import begin_round
from workers.settings import SiteWorkerSettings, parse_gpus

log = logging.getLogger("resonfl.site")

# A round's requests ride out an API restart of up to about two minutes.
ROUND_RETRY = RetryPolicy(budget_s=120.0)
BUNDLE_MAX_BYTES = 1 << 40  # a bound on what a download may unpack to, far above any job


@dataclass
class SiteConfig:
    site: str
    token: str
    api_url: str
    data_root: Path
    gpus: list[str] | None = None  # None: every GPU nvidia-smi sees; []: none
    heartbeat_s: float = 10.0
    threads: int | None = None  # OMP/MKL threads of a job process

    @classmethod
    def from_settings(cls, s: SiteWorkerSettings) -> SiteConfig:
        return cls(
            site=s.site_name,
            token=s.site_token,
            api_url=s.api_url,
            data_root=s.worker_data_root,
            gpus=parse_gpus(s.gpus),
            heartbeat_s=s.heartbeat_s,
        )

    def visible_gpus(self) -> list[dict[str, Any]]:
        found = _nvidia_smi()
        if self.gpus is None:
            return found
        by_index = {str(g["index"]): g for g in found}
        return [by_index.get(i, {"index": i, "name": "unknown"}) for i in self.gpus]


class SiteAPI(ApiClient):
    """The site endpoints of the API, authenticated with the site token.

    Everything a round needs (job info, weights download, state reports, the upload) is
    retried with backoff on connection errors (`resonfl.http`), so an API that restarts
    mid-round costs the round a few seconds, not a re-dispatch; the heartbeat is not (the
    next beat comes soon anyway)."""

    def __init__(
        self, cfg: SiteConfig, timeout_s: float = 60.0, retry: RetryPolicy = ROUND_RETRY
    ) -> None:
        super().__init__(cfg.api_url, cfg.token, timeout_s=timeout_s, retry=retry)
        self.cfg = cfg

    def heartbeat(self, status: str, gpus: list[dict[str, Any]]) -> None:
        body = {"status": status, "gpus": gpus}
        self.request("POST", "/site/status", json=body, retry=NO_RETRY).raise_for_status()

    def job(self, job_id: int, retry: RetryPolicy | None = None) -> dict[str, Any]:
        resp = self.request("GET", f"/site/jobs/{job_id}", retry=retry)
        resp.raise_for_status()
        return dict(resp.json())

    def download(self, path: str, target: Path) -> str:
        """Stream a file to `target`, hashing it on the way; return its sha256. A dropped
        connection starts the download again."""
        return self.call(lambda http: self._download(http, path, target), f"GET {path}")

    def _download(self, http: httpx.Client, path: str, target: Path) -> str:
        digest = hashlib.sha256()
        tmp = target.with_name(target.name + ".part")
        with http.stream("GET", path) as resp:
            raise_if_retryable(resp).raise_for_status()
            with tmp.open("wb") as out:
                for chunk in resp.iter_bytes(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            declared = resp.headers.get("x-content-sha256")
        if declared and declared != digest.hexdigest():
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"{path}: sha256 {digest.hexdigest()} != declared {declared}")
        tmp.replace(target)
        return digest.hexdigest()

    def state(
        self,
        job_id: int,
        round_num: int,
        state: str,
        error: str | None = None,
        log_text: str | None = None,
    ) -> None:
        body = {"state": state, "error": error, "log": log_text}
        path = f"/site/jobs/{job_id}/rounds/{round_num}/state"
        self.request("POST", path, json=body).raise_for_status()

    def upload(
        self, job_id: int, round_num: int, weights: Path, meta: dict[str, Any], attempt: int = 1
    ) -> dict[str, Any]:
        """Send the update as the raw body (the server streams it to disk, hashing as it
        arrives), meta in a header. Safe to repeat: the server keeps one result per (job,
        round, site) and answers a repeat of the same update with duplicate=true."""
        path = f"/site/jobs/{job_id}/rounds/{round_num}/result"
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(weights.stat().st_size),
            "X-Result-Meta": json.dumps(meta),
            # (job, round, site) + the site's attempt at the round: what makes a repeat a repeat
            "Idempotency-Key": f"{job_id}:{round_num}:{self.cfg.site}:{attempt}",
        }

        def send(http: httpx.Client) -> dict[str, Any]:
            with weights.open("rb") as body:
                resp = http.post(path, content=body, headers=headers)
            raise_if_retryable(resp).raise_for_status()
            return dict(resp.json())

        return self.call(send, f"POST {path}")


@dataclass
class SiteState:
    """What the heartbeat reports: busy while a round runs."""

    busy: bool = False
    current: tuple[int, int] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


STATE = SiteState()
_POOL: Any = None


def _warm_pool() -> Any:
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
    job's first round on this site does not pay for it (seconds on a small machine)."""
    _warm_pool().fill(_job_env(cfg, cfg.visible_gpus()), wait=False)


def _job_sessions() -> Any:
    """One job process per job, kept across that job's rounds on this site (closed when the
    job ends, when another job's round takes its place, or after 10 idle minutes)."""
    global _SESSIONS
    if _SESSIONS is None:
        # One at a time: a job between rounds must not hold a GPU another job's round needs.
        _SESSIONS = SessionPool(_warm_pool(), idle_timeout_s=600.0, max_sessions=1)
    return _SESSIONS


def _close_job_process(job_id: int) -> None:
    if _SESSIONS is not None:
        _SESSIONS.close_job(str(job_id))


class Heartbeat(threading.Thread):
    """Posts the worker's status every `heartbeat_s`; failures are logged, never fatal."""

    def __init__(self, cfg: SiteConfig) -> None:
        super().__init__(name="resonfl-heartbeat", daemon=True)
        self.cfg = cfg
        self.stopped = threading.Event()
        self.api = SiteAPI(cfg, timeout_s=10.0, retry=NO_RETRY)
        self.gpus = cfg.visible_gpus()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.beat()
            self.stopped.wait(self.cfg.heartbeat_s)

    def beat(self) -> None:
        try:
            self.api.heartbeat("busy" if STATE.busy else "idle", self.gpus)
            self.release_ended_jobs()
        except httpx.HTTPError as exc:
            log.warning("heartbeat failed: %s", exc)

    def release_ended_jobs(self) -> None:
        """A job that ended elsewhere (another site failed it, its owner cancelled it) while
        this site sat between rounds must not keep a job process, and its GPU memory, here."""
        if STATE.busy or _SESSIONS is None:
            return
        for key in _SESSIONS.job_keys():
            status = self.api.job(int(key))["status"]
            if status != "running" and not STATE.busy:
                _close_job_process(int(key))
                log.info("released job %s's process: the job is %s", key, status)

    def stop(self) -> None:
        self.stopped.set()


# ------------------------------------------------------------------------------ a round
def train_round(cfg: SiteConfig, job_id: int, round_num: int) -> str:
    """Run this site's part of one round; return what happened (for the worker's log).

    Any failure is reported to the server as this site's error for the round."""
    api = SiteAPI(cfg)
    try:
        info = api.job(job_id)
        if info["status"] != "running":
            _close_job_process(job_id)
        if info["status"] != "running" or info.get("current_round") != round_num:
            return f"skipped: job {job_id} is {info['status']}, round {info.get('current_round')}"
        with STATE.lock:
            STATE.busy, STATE.current = True, (job_id, round_num)
        try:
            return _train(api, cfg, job_id, round_num)
        except Exception as exc:
            error = f"site worker error: {type(exc).__name__}: {exc}"
            try:
                api.state(job_id, round_num, "failed", error=error)
            except httpx.HTTPError as report_exc:
                log.warning("could not report the failure: %s", report_exc)
            raise
    finally:
        with STATE.lock:
            STATE.busy, STATE.current = False, None
        api.close()


def _train(api: SiteAPI, cfg: SiteConfig, job_id: int, round_num: int) -> str:
    from resonfl.fl.shareable import sha256_file  # lazy: torch

    started = time.monotonic()
    phases: dict[str, float] = {"start": time.time()}  # wall clock: the server's is the same
    job_dir = _ensure_bundle(api, cfg, job_id)
    job = Job.load(job_dir, site=cfg.site)
    fed = job.federation
    gpus = cfg.visible_gpus()
    if fed.gpus_per_site > len(gpus):
        error = (
            f"meta.json resource_spec asks for {fed.gpus_per_site} GPU(s) per site; "
            f"site {cfg.site!r} was started with {len(gpus)} ({_gpu_list(cfg)})"
        )
        api.state(job_id, round_num, "failed", error=error)
        return error
    api.state(job_id, round_num, "training")
    work = cfg.data_root / "jobs" / str(job_id) / "rounds" / f"{round_num}-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    weights_in = work / "global.safetensors"
    mark = time.monotonic()
    phases["prepare_s"] = mark - started
    api.download(f"/site/jobs/{job_id}/rounds/{round_num}/weights", weights_in)
    phases["download_s"] = time.monotonic() - mark
    mark = time.monotonic()
    env = _job_env(cfg, gpus)
    data_root = _data_root(api, cfg, job_id, job_dir)
    state_dir = cfg.data_root / "jobs" / str(job_id) / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    # a re-run of this round (its update never arrived) starts from the state it began with
    attempt = begin_round(state_dir, round_num)
    # The job's process sees this job's own folder (rounds, state: read-write; its bundle and
    # data: read-only), never other jobs' folders or the worker's own files. The folder, not
    # state_dir itself, is bound: begin_round replaces state_dir, and a bind would keep the old.
    job_root = cfg.data_root / "jobs" / str(job_id)
    binds = Binds.of(rw=[job_root], ro=[data_root, job_dir])
    try:
        result = run_site_round(
            job_dir,
            cfg.site,
            round_num,
            fed.num_rounds,
            weights_in,
            work_dir=work / "run",
            data_root=data_root,
            state_dir=state_dir,
            timeout_s=fed.round_timeout_s,
            task_args=job.client_task_args(),
            env_extra=env,
            pool=_warm_pool(),
            should_stop=_stop_when_job_moves_on(api, job_id, round_num),
            session=_job_sessions().session(str(job_id), env, binds),
        )
    except SandboxCancelled as exc:
        log.info("job %s round %s: %s", job_id, round_num, exc)
        return str(exc)
    except SandboxError as exc:
        api.state(job_id, round_num, "failed", error=str(exc), log_text=_sandbox_line() + exc.log)
        return f"failed: {exc}"
    phases["run_s"], phases["train_s"] = time.monotonic() - mark, result.train_s
    if round_num >= fed.num_rounds - 1:
        _close_job_process(job_id)  # its last round: nothing more will come for it
    # the log goes with this report: the upload's meta travels in a header, kept small
    api.state(job_id, round_num, "uploading", log_text=_sandbox_line() + result.log)
    meta = {
        "samples": result.samples,
        "metrics": result.metrics,
        "train_s": result.train_s,
        "total_s": time.monotonic() - started,
        "sha256": sha256_file(result.weights_path),
    }
    mark = time.monotonic()
    api.upload(job_id, round_num, Path(result.weights_path), meta, attempt=attempt)
    phases["upload_s"] = time.monotonic() - mark
    # one parseable line per round: the round benchmark (bench/rounds.py) splits overhead with it
    log.info("round timings %s", json.dumps({"job": job_id, "round": round_num, **phases}))
    shutil.rmtree(work, ignore_errors=True)
    return f"uploaded job {job_id} round {round_num}: {result.samples} samples"


def _sandbox_line() -> str:
    """The confinement and limits that applied, first line of the round's log (job page,
    `resonfl logs`)."""
    return f"[sandbox] {json.dumps(confine.current().describe(), sort_keys=True)}\n"


def _stop_when_job_moves_on(api: SiteAPI, job_id: int, round_num: int) -> Callable[[], str | None]:
    """Asked every few seconds while the job process trains: a job that was cancelled, failed
    or left this round behind (aggregated without us) frees the site's GPU at once."""

    def should_stop() -> str | None:
        try:
            info = api.job(job_id, retry=NO_RETRY)
        except httpx.HTTPError:
            return None  # the API being briefly away is no reason to drop the work
        if info["status"] != "running":
            return f"job {job_id} is {info['status']}"
        if info.get("current_round") != round_num:
            return f"job {job_id} moved on to round {info.get('current_round')}"
        return None

    return should_stop


def _job_env(cfg: SiteConfig, gpus: list[dict[str, Any]]) -> dict[str, str]:
    env = {"CUDA_VISIBLE_DEVICES": ",".join(str(g["index"]) for g in gpus)}
    if cfg.threads:
        env.update(OMP_NUM_THREADS=str(cfg.threads), MKL_NUM_THREADS=str(cfg.threads))
    return env


def _gpu_list(cfg: SiteConfig) -> str:
    return "--gpus " + ",".join(cfg.gpus) if cfg.gpus else "no --gpus and none detected"


def _ensure_bundle(api: SiteAPI, cfg: SiteConfig, job_id: int) -> Path:
    """The job folder, downloaded once per job and unpacked atomically."""
    folder = cfg.data_root / "jobs" / str(job_id) / "job"
    if (folder / "meta.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f"job.{uuid.uuid4().hex[:8]}.tmp"
    zpath = folder.parent / f"bundle.{uuid.uuid4().hex[:8]}.zip"
    try:
        api.download(f"/site/jobs/{job_id}/bundle", zpath)
        _safe_extract(zpath, staging)
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / "meta.json").is_file():
                raise
    finally:
        zpath.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _data_root(api: SiteAPI, cfg: SiteConfig, job_id: int, job_dir: Path) -> Path:
    """This site's shard: inside the bundle, else the uploaded shard zip, else the site's own
    data in ``<data-root>/data`` (data that never leaves the site: the usual FL case)."""
    inside = job_dir / "shards" / cfg.site
    if inside.is_dir():
        return inside
    target = cfg.data_root / "jobs" / str(job_id) / "data"
    if target.is_dir():
        return target
    zpath = target.with_suffix(".zip")
    try:
        api.download(f"/site/jobs/{job_id}/shard", zpath)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code != 404:
            raise
        local = cfg.data_root / "data"
        local.mkdir(parents=True, exist_ok=True)
        return local
    staging = target.with_name("data.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    _safe_extract(zpath, staging)
    staging.rename(target)
    zpath.unlink(missing_ok=True)
    return target


def _safe_extract(zpath: Path, target: Path) -> None:
    """Unzip a download from the server with the one extractor (`resonfl.archives`): the
    server is trusted, but not blindly (no `..`, absolute paths or symlinks)."""
    target.mkdir(parents=True)
    with zpath.open("rb") as source:
        safe_extract(source, target, zpath.name, max_bytes=BUNDLE_MAX_BYTES)


def _nvidia_smi() -> list[dict[str, Any]]:
    """GPUs as nvidia-smi sees them, without touching CUDA in this process."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in io.StringIO(out):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            gpus.append({"index": parts[0], "name": parts[1], "memory_mb": int(float(parts[2]))})
    return gpus


_config: SiteConfig | None = None


def install(cfg: SiteConfig) -> None:
    global _config
    _config = cfg


def site_config() -> SiteConfig:
    """The running worker's config (set by `resonfl worker`, or from RESONFL_SITE_* vars)."""
    global _config
    if _config is None:
        _config = SiteConfig.from_settings(SiteWorkerSettings())
    return _config
