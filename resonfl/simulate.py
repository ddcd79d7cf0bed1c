"""Local simulator: run a job folder on one machine, no server, same files as the platform.

Every site's rounds run in a child process of their own (one per site, kept across the rounds:
`resonfl.runner.SessionPool`) through the same sandboxed runner the site workers use. Each
round is the FL core's one round loop (`resonfl.fl.rounds.fold_round`), as on the server:
updates are folded as the sites finish, the job's persistor writes the server's layout
(``files_out/GLOBAL_MODEL*.pt``, ``model_out/checkpoint.pt``) and the aggregator's state is
saved after each round under ``server_state/``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resonfl.fl.rounds import AggregatorStateStore, RoundTooSmallError, SiteUpdate, fold_round
from resonfl.fl.shareable import load_weights, read_parameter_names, save_weights
from resonfl.job import Job, JobValidationError
from resonfl.runner.confine import Binds
from resonfl.runner.requirements import RequirementsError, RequirementsPolicy, build_env
from resonfl.runner import (
    SandboxError,
    SessionPool,
    SiteRoundResult,
    WarmPool,
    init_global_weights,
    run_site_round,
)
from resonfl.templates.custom_persistor import PTFileModelPersistor


class SimulationError(RuntimeError):
    """A round could not complete (too few sites answered, or the model could not be built)."""


@dataclass
class RoundSummary:
    round: int
    sites: list[str]
    metrics: dict[str, float]
    site_metrics: dict[str, dict[str, float]]
    samples: dict[str, int]
    failed: dict[str, str]
    train_s: float
    wall_s: float

    def line(self, num_rounds: int) -> str:
        shown = ("train_loss", "global_val_loss", "global_top1", "val_loss", "top1")
        parts = [f"{k}={self.metrics[k]:.4f}" for k in shown if k in self.metrics]
        fail = f" failed={sorted(self.failed)}" if self.failed else ""
        return (
            f"round {self.round + 1}/{num_rounds}: {' '.join(parts)} "
            f"({self.wall_s:.1f}s, sites {len(self.samples)}){fail}"
        )


@dataclass
class SimulationResult:
    workspace: Path
    checkpoint: Path
    rounds: list[RoundSummary] = field(default_factory=list)
    stopped: str | None = None  # why the run ended before its last round (a privacy budget)

    def to_json(self) -> dict[str, Any]:
        return {
            "workspace": str(self.workspace),
            "checkpoint": str(self.checkpoint),
            "rounds": [r.__dict__ for r in self.rounds],
            "stopped": self.stopped,
        }


def simulate(
    job_dir: str | Path,
    workspace: str | Path,
    sites: int | list[str] | None = None,
    num_rounds: int | None = None,
    progress: bool = True,
    parallel: int | None = None,
    timeout_s: float | None = None,
    data_roots: dict[str, Path] | None = None,
    on_round: Callable[[RoundSummary], None] | None = None,
    requirements: RequirementsPolicy | None = None,
) -> SimulationResult:
    """Run the job in ``job_dir``; write checkpoints under ``workspace``; return per-round metrics.

    ``sites`` picks the first N of the job's sites (or names them); ``num_rounds`` overrides
    the job's round count; ``parallel`` caps concurrent site processes (default: CPU count).
    ``requirements``: how the job's requirements.txt is installed (as a site would, with uv,
    cached in ~/.cache/resonfl/requirements); default: any package, from the default index.
    """
    job_dir = Path(job_dir).resolve()
    job = Job.load(job_dir)
    site_names = _pick_sites(job, sites)
    rounds = num_rounds or job.federation.num_rounds
    if num_rounds is not None:
        job.federation.num_rounds = num_rounds
    roots = {s: Path(p) for s, p in (data_roots or {}).items()}
    for site in site_names:
        if site not in roots:
            if job.federation.dataset is not None:
                raise JobValidationError(
                    "meta.json",
                    f"datasets.{site}",
                    f"the job trains on the sites' dataset {job.federation.dataset!r}: "
                    f"give {site}'s folder (resonfl simulate --data {site}=/folder)",
                )
            if site not in job.shards:
                raise JobValidationError(
                    "meta.json", f"shards.{site}", "no data shard for this site in the job folder"
                )
            roots[site] = job.shards[site]

    ws = Path(workspace).resolve()
    run_id = start_run(ws, job_dir)
    timeout = timeout_s or job.federation.round_timeout_s
    workflow = job.build_workflow()
    aggregator = job.build_aggregator()
    persistor = PTFileModelPersistor(ws)

    workers = parallel or max(1, min(len(site_names), os.cpu_count() or 1))
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env_extra = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    packages = _requirements_env(job, requirements)
    if packages is not None:  # the job's own packages, as every site would have them
        env_extra["PYTHONPATH"] = str(packages)
    # One job process per site for the whole run, all started now so that their Python and
    # torch imports overlap the initial model's build; nothing refills the pool afterwards.
    # Each site's process is confined to its own folders (see resonfl/runner/confine.py),
    # so each is started for its site: one per (environment, folders).
    binds = {site: _site_binds(ws, site, roots[site], packages) for site in site_names}
    pool = WarmPool(size=1, refill=False)
    for site in site_names:
        pool.fill(env_extra, wait=False, binds=binds[site])
    sessions = SessionPool(pool)  # one job process per site, kept across the rounds
    global_path = ws / "global" / "round_0.safetensors"
    try:
        init_global_weights(job_dir, global_path, ws / "init", timeout)
    except SandboxError as exc:
        sessions.close()
        pool.close()
        raise SimulationError(f"initial model: {exc}\n{exc.log[-2000:]}") from None
    weights = load_weights(global_path)
    aggregator.bind_model(read_parameter_names(global_path))  # FedOpt: parameters vs buffers

    bar = _progress_bar(rounds, progress)
    result = SimulationResult(ws, ws / "model_out" / "checkpoint.pt")
    state = AggregatorStateStore(ws / "server_state")
    try:
        for rnd in range(rounds):
            started = time.monotonic()
            chosen = workflow.sites_for_round(rnd, site_names)
            task_args = {**aggregator.client_args(), "run_id": run_id}

            def train(
                site: str, rnd: int = rnd, path: Path = global_path, task_args: dict[str, Any] = task_args
            ) -> SiteRoundResult:
                return run_site_round(
                    job_dir, site, rnd, rounds, path,
                    work_dir=ws / "sites" / site / "work",
                    data_root=roots[site],
                    state_dir=ws / "sites" / site / "state",
                    timeout_s=timeout,
                    task_args=task_args,
                    env_extra=env_extra,
                    pool=pool,
                    session=sessions.session(site, env_extra, binds[site]),
                )

            train_s: dict[str, float] = {}
            aggregator.expect_sites(chosen)  # SecAgg: keys are agreed before any update
            try:
                outcome = fold_round(
                    aggregator,
                    weights,
                    rnd,
                    _as_they_finish(ws, rnd, chosen, train, workers, train_s),
                    needed=workflow.min_results(rnd, site_names),
                    persistor=persistor,
                    state=state,
                    final=rnd + 1 == rounds,
                )
            except RoundTooSmallError as exc:
                raise SimulationError(
                    f"round {rnd}: {exc.accepted} of {exc.needed} required sites finished. "
                    + "; ".join(f"{s}: {m}" for s, m in exc.refused.items())
                ) from None
            weights = outcome.weights
            global_path = ws / "global" / f"round_{rnd + 1}.safetensors"
            save_weights(weights, global_path)
            summary = RoundSummary(
                round=rnd,
                sites=chosen,
                metrics=outcome.metrics,
                site_metrics=outcome.site_metrics,
                samples=outcome.samples,
                failed=outcome.refused,
                train_s=max((train_s[s] for s in outcome.accepted), default=0.0),
                wall_s=time.monotonic() - started,
            )
            result.rounds.append(summary)
            _report(bar, summary, rounds, progress)
            if on_round:
                on_round(summary)
            if outcome.stopped is not None:
                result.stopped = outcome.stopped
                if progress:
                    print(f"stopped: {outcome.stopped}", file=sys.stderr)
                break
    finally:
        sessions.close()
        pool.close()
        if bar is not None:
            bar.close()
    (ws / "rounds.json").write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    _write_run(ws, run_id, job_dir, "finished")
    return result


# What a simulator run writes into its workspace: a new run removes exactly these, nothing else.
RUN_FILE = "run.json"
RUN_ENTRIES = frozenset(
    {RUN_FILE, "rounds.json", "files_out", "model_out", "sites", "logs", "global", "init",
     "server_state"}
)


def start_run(ws: Path, job_dir: Path) -> str:
    """Give the workspace to a new run: a fresh run id, and no trace of an earlier run.

    Re-running in the same folder used to resume the previous run's client state (optimizer
    moments, EMA) and append to its logs. A workspace holding only what a simulator run writes
    is cleared; one holding anything else is refused, because it is not ours to delete.
    """
    if ws.exists() and not ws.is_dir():
        raise SimulationError(f"workspace {ws} is a file; pass --workspace with a folder")
    if ws.is_dir():
        foreign = sorted(p.name for p in ws.iterdir() if p.name not in RUN_ENTRIES)
        if foreign:
            raise SimulationError(
                f"workspace {ws} holds files a simulator run did not write "
                f"({', '.join(foreign[:5])}); pass --workspace with an empty or new folder"
            )
        previous = _read_run(ws)
        for name in RUN_ENTRIES:
            target = ws / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        if previous:
            print(f"workspace {ws}: replacing the previous run {previous}", file=sys.stderr)
    ws.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:12]
    _write_run(ws, run_id, job_dir, "running")
    return run_id


def _read_run(ws: Path) -> str | None:
    try:
        return str(json.loads((ws / RUN_FILE).read_text(encoding="utf-8"))["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_run(ws: Path, run_id: str, job_dir: Path, status: str) -> None:
    info = {"run_id": run_id, "job_dir": str(job_dir), "status": status}
    tmp = ws / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    tmp.replace(ws / RUN_FILE)


def _pick_sites(job: Job, sites: int | list[str] | None) -> list[str]:
    known = list(job.federation.sites)
    if sites is None:
        return known
    if isinstance(sites, int):
        if not 1 <= sites <= len(known):
            raise JobValidationError(
                "meta.json",
                "sites",
                f"--sites {sites}: the job has {len(known)} sites ({', '.join(known)}); "
                f"render it with that many sites (resonfl init --sites {sites})",
            )
        return known[:sites]
    unknown = [s for s in sites if s not in known]
    if unknown:
        raise JobValidationError("meta.json", "sites", f"unknown sites {unknown}")
    return list(sites)


def _as_they_finish(
    ws: Path,
    rnd: int,
    sites: list[str],
    train: Callable[[str], SiteRoundResult],
    workers: int,
    train_s: dict[str, float],
) -> Iterator[SiteUpdate]:
    """Train the sites concurrently and yield each one's update the moment it finishes."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(train, site): site for site in sites}
        for fut in as_completed(futures):
            site = futures[fut]
            try:
                done = fut.result()
            except SandboxError as exc:
                _save_site_log(ws, site, rnd, exc)
                yield SiteUpdate.failed(site, str(exc))
                continue
            _save_site_log(ws, site, rnd, done)
            train_s[site] = done.train_s
            yield SiteUpdate(
                site=site,
                samples=done.samples,
                metrics=done.metrics,
                load=functools.partial(load_weights, done.weights_path),
            )


def _save_site_log(ws: Path, site: str, rnd: int, outcome: SiteRoundResult | SandboxError) -> None:
    logs = ws / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{site}.log", "a", encoding="utf-8") as fh:
        fh.write(f"===== round {rnd} =====\n{outcome.log}\n")


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm  # lazy: progress bar

    return tqdm(total=total, desc="rounds", unit="round", dynamic_ncols=True)


def _report(bar: Any, summary: RoundSummary, rounds: int, progress: bool) -> None:
    if bar is None:
        return
    bar.write(summary.line(rounds))
    bar.update(1)


def _site_binds(ws: Path, site: str, data_root: Path, packages: Path | None = None) -> Binds:
    """What a site's job process sees: its own folder (work, state) read-write, its data,
    the global weights and the job's packages read-only."""
    own, shared = ws / "sites" / site, ws / "global"
    own.mkdir(parents=True, exist_ok=True)
    shared.mkdir(parents=True, exist_ok=True)
    return Binds.of(rw=[own], ro=[data_root, shared, *([packages] if packages else [])])


def _requirements_env(job: Job, policy: RequirementsPolicy | None) -> Path | None:
    """The folder of the job's requirements (built with uv, or from the cache), or None."""
    if not job.requirements:
        return None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resonfl"
    try:
        report = build_env(
            job.requirements, policy or RequirementsPolicy(mode="any"), cache / "requirements",
            site="the simulator",
        )  # fmt: skip
    except RequirementsError as exc:
        raise SimulationError(str(exc)) from None
    except ImportError:
        raise SimulationError(
            "the job has requirements.txt: installing them needs uv (pip install uv)"
        ) from None
    return Path(report.path) if report is not None else None
