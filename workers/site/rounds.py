"""One round on this site: fetch, run the job's code confined, report, upload."""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from resonfl.http import NO_RETRY
from resonfl.job import Job
from resonfl.runner import SandboxCancelled, SandboxError, SandboxTimeout, confine, run_site_round
from resonfl.runner.tasks import SiteRoundResult
from resonfl.runner.confine import Binds
from resonfl.runner.requirements import RequirementsError
from resonfl_server.workers.client_state import begin_round, prepare_round
from resonfl_server.workers.site.api import SiteAPI
from resonfl_server.workers.site.config import SiteConfig
from resonfl_server.workers.site.files import ensure_bundle, fetch_data_root
from resonfl_server.workers.site.environments import prepare_requirements
from resonfl_server.workers.site.secagg import SecureRound, secure_args
from resonfl_server.workers.site.processes import (
    STATE,
    close_job_process,
    job_env,
    job_sessions,
    prepare_process,
    warm_pool,
)

log = logging.getLogger("resonfl.site")


def train_round(cfg: SiteConfig, job_id: int, round_num: int) -> str:
    """Run this site's part of one round; return what happened (for the worker's log).

    Any failure is reported to the server as this site's error for the round."""
    api = SiteAPI(cfg)
    try:
        info = api.job(job_id)
        if info["status"] != "running":
            close_job_process(job_id)
        if info["status"] != "running" or info.get("current_round") != round_num:
            return f"skipped: job {job_id} is {info['status']}, round {info.get('current_round')}"
        with STATE.lock:
            STATE.busy, STATE.current = True, (job_id, round_num)
        try:
            return _train(api, cfg, job_id, round_num, info)
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


def refusal(cfg: SiteConfig, job: Job, info: dict[str, Any]) -> str | None:
    """Why this site will not run the job (its dataset, its policy), or None. Checked by the
    site itself on every round: the server's view of the site's policy is only a mirror."""
    name = job.federation.dataset
    if name is not None and cfg.dataset(name) is None:
        held = ", ".join(d.name for d in cfg.datasets) or "none"
        return (
            f"site {cfg.site!r} refuses the job: it holds no dataset {name!r} "
            f"(its datasets: {held})"
        )
    why = cfg.policy.refusal(info, job.federation.gpus_per_site, cfg.site)
    return None if why is None else f"refused by the site's policy: {why}"


def _train(
    api: SiteAPI, cfg: SiteConfig, job_id: int, round_num: int, info: dict[str, Any]
) -> str:
    started = time.monotonic()
    phases: dict[str, float] = {"start": time.time()}  # wall clock: the server's is the same
    job_dir = ensure_bundle(api, cfg, job_id)
    job = Job.load(job_dir, site=cfg.site)
    fed = job.federation
    refused = refusal(cfg, job, info)
    if refused is not None:
        api.state(job_id, round_num, "failed", error=refused)
        close_job_process(job_id)
        return refused
    gpus = cfg.visible_gpus()
    if fed.gpus_per_site > len(gpus):
        error = (
            f"meta.json resource_spec asks for {fed.gpus_per_site} GPU(s) per site; "
            f"site {cfg.site!r} was started with {len(gpus)} ({_gpu_list(cfg)})"
        )
        api.state(job_id, round_num, "failed", error=error)
        return error
    try:
        job_env_dir = prepare_requirements(api, cfg, job_id, job.requirements)
    except RequirementsError as exc:
        api.state(job_id, round_num, "failed", error=str(exc))
        return f"failed: {exc}"
    api.state(job_id, round_num, "training")
    secure = _secure_round(api, cfg, job, job_id, round_num)
    try:
        return _run_round(api, cfg, job_id, round_num, job_dir, job, gpus, job_env_dir,
                          started, phases, secure)  # fmt: skip
    finally:
        if secure is not None:
            secure.stop()


def _secure_round(
    api: SiteAPI, cfg: SiteConfig, job: Job, job_id: int, round_num: int
) -> SecureRound | None:
    """A secure-aggregation job: this site's keys go out now, its shares while it trains."""
    args = secure_args(job)
    if args is None:
        return None
    secure = SecureRound(api, cfg.site, job_id, round_num, args, job.federation.round_timeout_s)
    secure.start()
    return secure


def _run_round(
    api: SiteAPI,
    cfg: SiteConfig,
    job_id: int,
    round_num: int,
    job_dir: Path,
    job: Job,
    gpus: list[dict[str, Any]],
    job_env_dir: Path | None,
    started: float,
    phases: dict[str, float],
    secure: SecureRound | None,
) -> str:
    from resonfl.fl.shareable import sha256_file  # lazy: torch

    fed = job.federation
    work = cfg.data_root / "jobs" / str(job_id) / "rounds" / f"{round_num}-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    weights_in = work / "global.safetensors"
    mark = time.monotonic()
    phases["prepare_s"] = mark - started
    api.download(f"/site/jobs/{job_id}/rounds/{round_num}/weights", weights_in)
    phases["download_s"] = time.monotonic() - mark
    mark = time.monotonic()
    env, data_root, binds = _process_spec(api, cfg, job_id, job_dir, job, gpus, job_env_dir)
    state_dir = cfg.data_root / "jobs" / str(job_id) / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    # a re-run of this round (its update never arrived) starts from the state it began with
    attempt = begin_round(state_dir, round_num)
    job_root = cfg.data_root / "jobs" / str(job_id)
    timeout_s, over = _wall_budget(cfg, job_root, fed.round_timeout_s)
    if over is not None:
        api.state(job_id, round_num, "failed", error=over)
        close_job_process(job_id)
        return over
    run_mark = time.monotonic()
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
            timeout_s=timeout_s,
            task_args=job.client_task_args(),
            env_extra=env,
            pool=warm_pool(),
            should_stop=_stop_when_job_moves_on(api, job_id, round_num),
            session=job_sessions().session(str(job_id), env, binds),
        )
    except SandboxCancelled as exc:
        log.info("job %s round %s: %s", job_id, round_num, exc)
        return str(exc)
    except SandboxError as exc:
        _spend_wall(job_root, time.monotonic() - mark)
        if isinstance(exc, SandboxTimeout) and timeout_s < fed.round_timeout_s:
            exc = SandboxTimeout(f"{exc} (the site's policy: max_wall_time_s per job)", exc.log)
        api.state(
            job_id, round_num, "failed", error=str(exc), log_text=_sandbox_line() + exc.log,
            sandbox=confine.current().describe(),
        )  # fmt: skip
        return f"failed: {exc}"
    ran_s = time.monotonic() - run_mark
    phases["run_s"], phases["train_s"] = time.monotonic() - mark, result.train_s
    _spend_wall(job_root, phases["run_s"])
    if round_num >= fed.num_rounds - 1:
        close_job_process(job_id)  # its last round: nothing more will come for it
    upload, samples = Path(result.weights_path), result.samples
    if secure is not None:  # the update leaves this worker masked, its samples count inside
        upload = secure.mask(weights_in, upload, result.samples, work / "masked.safetensors")
        samples = 1  # the server learns only the sum of the counts (in the masked vector)
    # the log goes with this report: the upload's meta travels in a header, kept small
    api.state(job_id, round_num, "uploading", log_text=_sandbox_line() + result.log)
    meta = {
        "samples": samples,
        "metrics": result.metrics,
        "train_s": result.train_s,
        "total_s": time.monotonic() - started,
        "sha256": sha256_file(upload),
        "phases": _phases(phases, run_mark - mark, ran_s, result),
        "sandbox": confine.current().describe(),
    }
    mark = time.monotonic()
    api.upload(job_id, round_num, upload, meta, attempt=attempt)
    phases["upload_s"] = time.monotonic() - mark
    if secure is not None:
        log.info("job %s round %s: %s", job_id, round_num, secure.unmask())
    # one parseable line per round: the round benchmark (bench/rounds.py) splits overhead with it
    log.info("round timings %s", json.dumps({"job": job_id, "round": round_num, **phases}))
    shutil.rmtree(work, ignore_errors=True)
    if round_num < fed.num_rounds - 1:
        prepare_round(state_dir, round_num + 1)  # while the server aggregates
    return f"uploaded job {job_id} round {round_num}: {result.samples} samples"


def _process_spec(
    api: SiteAPI,
    cfg: SiteConfig,
    job_id: int,
    job_dir: Path,
    job: Job,
    gpus: list[dict[str, Any]],
    job_env_dir: Path | None,
) -> tuple[dict[str, str], Path, Binds]:
    """The job process's environment, data folder and binds: the same for `prepare_job` and
    every round, so the process prepared for the job is the one its first round takes."""
    env = job_env(cfg, gpus)
    if job_env_dir is not None:  # the job's packages; none shadows the platform's (resolved against it)
        env["PYTHONPATH"] = str(job_env_dir)
    data_root = fetch_data_root(api, cfg, job_id, job_dir, job.federation.dataset)
    # The job's process sees this job's own folder (rounds, state: read-write; its bundle and
    # data: read-only), never other jobs' folders or the worker's own files. The folder, not
    # state_dir itself, is bound: begin_round replaces state_dir, and a bind would keep the old.
    job_root = cfg.data_root / "jobs" / str(job_id)
    binds = Binds.of(
        rw=[job_root], ro=[data_root, job_dir, *([job_env_dir] if job_env_dir else [])]
    )
    return env, data_root, binds


def prepare_job(cfg: SiteConfig, job_id: int) -> str:
    """A job is starting (the server builds its initial weights): fetch its bundle, data and
    packages and start its job process now, so round 0 does not wait for them. Only a hint:
    whatever is refused or fails here is reported by round 0's task, which does it all again."""
    api = SiteAPI(cfg)
    try:
        info = api.job(job_id)
        if info["status"] != "running" or info.get("current_round") not in (None, 0):
            return f"skipped: job {job_id} is {info['status']}"
        job_dir = ensure_bundle(api, cfg, job_id)
        job = Job.load(job_dir, site=cfg.site)
        gpus = cfg.visible_gpus()
        if refusal(cfg, job, info) is not None or job.federation.gpus_per_site > len(gpus):
            return "skipped: round 0 will say why this site cannot run it"
        try:
            job_env_dir = prepare_requirements(api, cfg, job_id, job.requirements)
        except RequirementsError as exc:
            return f"skipped: {exc}"
        env, _, binds = _process_spec(api, cfg, job_id, job_dir, job, gpus, job_env_dir)
        prepare_process(job_id, env, binds)
        return "job process starting"
    except Exception as exc:  # noqa: BLE001 - a hint that failed: round 0 reports the error
        return f"not prepared: {type(exc).__name__}: {exc}"
    finally:
        api.close()


def _phases(
    worker: dict[str, float], data_s: float, ran_s: float, result: SiteRoundResult
) -> dict[str, float | bool]:
    """The round phase by phase (schemas.phases.RoundPhases): the worker's own timings and
    the job process's; what the process did not account for is its start and hand-off."""
    own = result.phases
    out: dict[str, float | bool] = {
        "prepare_s": worker["prepare_s"] + data_s,  # bundle, job, data folder, client state
        "download_s": worker["download_s"],
        "process_s": max(ran_s - own.get("executor_s", ran_s), 0.0),
        "started_process": result.started_process,
    }
    for key in ("import_s", "build_s", "data_s", "eval_s", "train_s", "save_s"):
        if key in own:
            out[key] = max(own[key], 0.0)
    return out


WALL_FILE = "wall_s"  # seconds of job code this site ran for the job (policy max_wall_time_s)


def _wall_budget(cfg: SiteConfig, job_root: Path, round_timeout_s: float) -> tuple[float, str | None]:
    """The round's time limit under the site's policy, or why the job has no time left."""
    limit = cfg.policy.max_wall_time_s
    if limit is None:
        return round_timeout_s, None
    path = job_root / WALL_FILE
    used = float(path.read_text()) if path.is_file() else 0.0
    if used >= limit:
        return 0.0, (
            f"refused by the site's policy: site {cfg.site!r} gives a job at most "
            f"{limit:g} s of wall time; this job has used {used:.0f} s"
        )
    return min(round_timeout_s, limit - used), None


def _spend_wall(job_root: Path, seconds: float) -> None:
    path = job_root / WALL_FILE
    used = float(path.read_text()) if path.is_file() else 0.0
    path.write_text(f"{used + seconds:.3f}")


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


def _gpu_list(cfg: SiteConfig) -> str:
    return "--gpus " + ",".join(cfg.gpus) if cfg.gpus else "no --gpus and none detected"
