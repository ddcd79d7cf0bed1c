"""The `resonfl` command: job folders, the local simulator, and the platform client."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from resonfl.job import Job, JobValidationError


def _die(message: str, code: int = 2) -> int:
    print(f"resonfl: error: {message}", file=sys.stderr)
    return code


# ------------------------------------------------------------------ job folders
def cmd_examples(args: argparse.Namespace) -> int:
    from resonfl.catalog import list_examples  # lazy: numpy

    for ex in list_examples():
        print(f"{ex.name:<10} {ex.description}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from resonfl.catalog import get_example, make_job  # lazy: numpy

    target = Path(args.dir)
    if target.exists() and any(target.iterdir()) and not args.force:
        return _die(f"{target} is not empty (use --force to render into it)")
    target.mkdir(parents=True, exist_ok=True)
    at_sites = get_example(args.example).dataset.get("at_sites")
    if at_sites:
        job = make_job(args.example, sites=args.sites, num_rounds=args.rounds)
        job.render(target)
        print(f"rendered {args.example!r} job on the sites' dataset {at_sites!r} into {target}")
        print(
            f"the data stays at the sites: make example folders with `resonfl shards "
            f"--example {args.example} -o DATA --sites {len(job.federation.sites)}`, then start "
            f"each worker "
            f"with --dataset {at_sites}=DATA/site-N, or simulate: resonfl simulate {target} "
            + " ".join(f"--data {s}=DATA/{s}" for s in job.federation.sites)
        )
        return 0
    job = make_job(
        args.example,
        sites=args.sites,
        num_rounds=args.rounds,
        shards_dir=target / "shards",
        split=args.split,
        alpha=args.alpha,
        seed=args.seed,
    )
    job.render(target)
    print(f"rendered {args.example!r} job with {len(job.federation.sites)} sites into {target}")
    print(f"next: resonfl simulate {target} --sites {len(job.federation.sites)}")
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    from resonfl.catalog.shards import make_shards  # lazy: numpy

    shards = make_shards(
        args.example, Path(args.out), args.sites, split=args.split, alpha=args.alpha, seed=args.seed
    )
    for site, path in shards.items():
        print(f"{site}: {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    job = Job.load(args.dir)
    fed = job.federation
    print(
        f"ok: {job.name!r}, {fed.num_rounds} rounds, sites {', '.join(fed.sites)}, "
        f"min_clients {fed.effective_min_clients}, aggregator {fed.aggregator_path}"
    )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from resonfl.runner.requirements import RequirementsPolicy  # lazy: per command
    from resonfl.simulate import SimulationError, simulate  # lazy: torch

    workspace = Path(args.workspace) if args.workspace else Path(args.dir) / "workspace"
    data_roots = {}
    for value in args.data:
        site, sep, folder = value.partition("=")
        if not sep or not folder:
            return _die(f"--data {value!r}: write SITE=/folder")
        data_roots[site] = Path(folder).resolve()
    try:
        result = simulate(
            args.dir,
            workspace,
            sites=args.sites,
            num_rounds=args.rounds,
            progress=not args.quiet,
            parallel=args.parallel,
            requirements=RequirementsPolicy(
                mode="any", index_url=args.index_url, find_links=tuple(args.find_links or ()),
                no_index=args.no_index,
            ),
            data_roots=data_roots,
        )
    except SimulationError as exc:
        return _die(str(exc), 1)
    print(f"global models: {workspace / 'files_out'}")
    print(f"final checkpoint: {result.checkpoint}")
    return 0


# ------------------------------------------------------------------ platform client
def _client(args: argparse.Namespace) -> Any:
    from resonfl.client import Client  # lazy: httpx

    url = args.server or os.environ.get("RESONFL_SERVER", "http://127.0.0.1:8000")
    token = args.token or os.environ.get("RESONFL_TOKEN")
    if not token:
        raise SystemExit(_die("no API token: pass --token or set RESONFL_TOKEN"))
    return Client(url, token)


def cmd_submit(args: argparse.Namespace) -> int:
    client = _client(args)
    job_id = client.submit(Path(args.dir))
    print(job_id)
    if args.wait:
        client.wait(job_id, progress=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    info = client.status(args.job_id)
    sandbox = sandbox_by_site(info)
    if args.json:
        print(json.dumps({**info, "sandbox": sandbox}, indent=2, default=str))
    else:
        print(status_summary(info, sandbox))
    return 0


def sandbox_by_site(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The confinement and limits each site applied in its latest round that reported them:
    the `sandbox` field the site worker sends with every result (stored as reported)."""
    found: dict[str, dict[str, Any]] = {}
    for rnd in sorted(job.get("rounds") or [], key=lambda r: int(r["number"])):
        for res in rnd.get("results") or []:
            if isinstance(res.get("sandbox"), dict):
                found[res["site"]] = dict(res["sandbox"])
    return found


# round 0's phases, in the order they run (the job page shows the same table)
PHASES = (
    ("prepare_s", "bundle+data"),
    ("download_s", "download"),
    ("process_s", "process start"),
    ("import_s", "import"),
    ("build_s", "model build"),
    ("data_s", "data load"),
    ("eval_s", "evaluate"),
    ("train_s", "first train"),
    ("save_s", "save"),
)


def phases_text(phases: dict[str, Any], warm: bool | None) -> str:
    """One line: each measured phase in seconds, and whether a warm process ran it."""
    parts = [
        f"{label} {phases[key]:.2f}s"
        for key, label in PHASES
        if isinstance(phases.get(key), int | float)
    ]
    if warm is not None:
        parts.append("warm process" if warm else "process started for it")
    return ", ".join(parts) or "no phases reported"


def round0_lines(job: dict[str, Any]) -> list[str]:
    """Where round 0 spent its time: the server's initial weights, then each site."""
    lines = []
    init = job.get("init_phases")
    if isinstance(init, dict):
        total = init.get("total_s")
        head = f"{total:.2f}s: " if isinstance(total, int | float) else ""
        lines.append(f"  initial weights (server): {head}{phases_text(init, init.get('warm'))}")
    for rnd in job.get("rounds") or []:
        if rnd.get("number") != 0:
            continue
        for res in sorted(rnd.get("results") or [], key=lambda r: r["site"]):
            phases = res.get("phases")
            if isinstance(phases, dict):
                started = phases.get("started_process")
                warm = None if started is None else not started
                lines.append(f"  {res['site']}: {phases_text(phases, warm)}")
    return ["round 0, where the time went:", *lines] if lines else []


def sandbox_text(info: dict[str, Any]) -> str:
    """One line: confined or not, network, and each limit (0 means none)."""
    if not info.get("confined"):
        return f"NOT confined (mode {info.get('mode', '?')}): job code ran unsandboxed"
    limits = info.get("limits") or {}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(limits.items()))
    network = "network allowed" if info.get("network") else "no network"
    return f"confined (bubblewrap), {network}, {shown}"


SHOWN_METRICS = ("top1", "val_loss", "train_loss", "global_top1", "global_val_loss")


def status_summary(job: dict[str, Any], sandbox: dict[str, dict[str, Any]] | None = None) -> str:
    """A job in a few lines: state, rounds done, each site's latest metrics and the sandbox
    it applied, the error."""
    rounds = job.get("rounds") or []
    done = sum(1 for r in rounds if r.get("status") == "done")
    lines = [f"job {job['id']} {job['name']!r}: {job['status']}, round {done}/{job['num_rounds']}"]
    decisions = job.get("decisions") or []
    pending = [d["site"] for d in decisions if d.get("status") == "pending"]
    if pending and job["status"] == "queued":
        lines.append(f"  awaiting approval at {', '.join(pending)}")
    for d in decisions:
        if d.get("status") != "pending":
            why = f": {d['reason']}" if d.get("reason") else ""
            lines.append(f"  {d['site']} {d['status']} it ({d.get('operator')}){why}")
    last_done: dict[str, dict[str, Any]] = {}
    last_any: dict[str, dict[str, Any]] = {}
    for rnd in sorted(rounds, key=lambda r: r["number"]):
        for res in rnd.get("results") or []:
            entry = {**res, "round": rnd["number"]}
            last_any[res["site"]] = entry
            if res.get("status") == "done":
                last_done[res["site"]] = entry
    for site in job.get("sites") or []:
        done_res, any_res = last_done.get(site), last_any.get(site)
        parts = []
        if done_res is not None:
            metrics = done_res.get("metrics") or {}
            shown = [k for k in SHOWN_METRICS if isinstance(metrics.get(k), int | float)]
            text = " ".join(f"{k}={metrics[k]:.4g}" for k in shown) or "no metrics"
            parts.append(f"round {done_res['round'] + 1} done: {text}")
        if any_res is not None and any_res is not done_res:
            error = f": {any_res['error']}" if any_res.get("error") else ""
            parts.append(f"round {any_res['round'] + 1} {any_res['status']}{error}")
        lines.append(f"  {site}: {'; '.join(parts) or 'no result yet'}")
        if sandbox and site in sandbox:
            lines.append(f"    sandbox: {sandbox_text(sandbox[site])}")
    lines.extend(round0_lines(job))
    if job.get("error"):
        lines.append(f"error: {job['error']}")
    return "\n".join(lines)


def cmd_jobs(args: argparse.Namespace) -> int:
    jobs = _client(args).list_jobs()
    if args.json:
        print(json.dumps(jobs, indent=2, default=str))
        return 0
    if not jobs:
        print("no jobs")
        return 0
    print(f"{'ID':>5}  {'STATUS':<10} {'ROUND':>7}  {'CREATED':<19}  NAME")
    for job in jobs:
        current = job.get("current_round")
        where = f"{0 if current is None else current + 1}/{job['num_rounds']}"
        created = str(job.get("created_at", ""))[:19].replace("T", " ")
        print(f"{job['id']:>5}  {job['status']:<10} {where:>7}  {created:<19}  {job['name']}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    client = _client(args)
    shown: dict[tuple[str, int], int] = {}
    while True:
        for site, entries in sorted(client.logs(args.job_id, site=args.site).items()):
            for entry in entries:
                key = (site, int(entry["round"]))
                text = entry.get("log") or ""
                if key not in shown:
                    print(f"===== {site} round {key[1] + 1} ({entry['status']}) =====")
                    if entry.get("error"):
                        print(f"error: {entry['error']}")
                fresh = text[shown.get(key, 0) :]
                if fresh:
                    print(fresh, end="" if fresh.endswith("\n") else "\n")
                shown[key] = len(text)
        sys.stdout.flush()
        if not args.follow or client.status(args.job_id)["status"] in TERMINAL_STATES:
            return 0
        time.sleep(args.poll)


TERMINAL_STATES = ("finished", "failed", "cancelled")


def cmd_cancel(args: argparse.Namespace) -> int:
    job = _client(args).cancel(args.job_id)
    print(f"job {job['id']}: {job['status']}")
    return 0


def cmd_twin(args: argparse.Namespace) -> int:
    client = _client(args)
    twin = client.twin(args.job_id)
    print(f"job {args.job_id}: centralized twin is job {twin['id']} on {twin['sites'][0]}")
    if not args.wait:
        return 0
    client.wait(int(twin["id"]), progress=not args.json)
    cmp = client.twin_comparison(args.job_id)
    if args.json:
        print(json.dumps(cmp, indent=2))
        return 0
    for curve in cmp["curves"]:
        if curve["gap"] is None:
            continue
        scale, unit = (100.0, " points") if curve["key"] == "global_top1" else (1.0, "")
        print(
            f"gap in {curve['label']} (global model entering round {curve['gap_round']}): "
            f"{curve['gap'] * scale:+.4g}{unit} (centralized - FL)"
        )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    table = _client(args).compare([int(i) for i in args.job_ids])
    print(json.dumps(table.raw, indent=2) if args.json else table)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from resonfl.evaluate import EvaluationError, evaluate_checkpoint  # lazy: torch

    try:
        result = evaluate_checkpoint(args.job, args.checkpoint, args.data, args.timeout)
    except EvaluationError as exc:
        return _die(str(exc), 1)
    if args.json:
        print(json.dumps(result.metrics, indent=2))
    else:
        for key, value in result.metrics.items():
            print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    path = _client(args).download(args.job_id, args.output, round=args.round)
    print(path)
    return 0


def _client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", help="API URL (default $RESONFL_SERVER or http://127.0.0.1:8000)")
    p.add_argument("--token", help="API token (default $RESONFL_TOKEN)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resonfl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("examples", help="list the example catalog")
    p.set_defaults(func=cmd_examples)

    p = sub.add_parser("init", help="render an example job folder with data shards")
    p.add_argument("--example", required=True)
    p.add_argument("dir")
    p.add_argument("--sites", type=int, default=4)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--split", choices=["iid", "dirichlet"], default="dirichlet")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("shards", help="split an example's data set into per-site shards")
    p.add_argument("--example", required=True)
    p.add_argument("--sites", type=int, default=4)
    p.add_argument("--split", choices=["iid", "dirichlet"], default="dirichlet")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", required=True)
    p.set_defaults(func=cmd_shards)

    p = sub.add_parser("validate", help="check a job folder")
    p.add_argument("dir")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("simulate", help="run a job folder locally, one process per site")
    p.add_argument("dir")
    p.add_argument("--sites", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument(
        "--workspace",
        help="output folder (default DIR/workspace); a new run replaces the previous run there",
    )
    p.add_argument("--parallel", type=int, default=None, help="site processes at once")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="SITE=/folder",
        help="a site's data folder (repeatable); needed for a job on the sites' dataset",
    )
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--index-url", help="requirements.txt: the package index (default PyPI)")
    p.add_argument("--find-links", action="append", help="requirements.txt: a folder of wheels")
    p.add_argument("--no-index", action="store_true", help="requirements.txt: find-links only")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("submit", help="submit a job folder to a ResonFL server")
    p.add_argument("dir")
    p.add_argument("--wait", action="store_true", help="wait with a progress bar")
    _client_flags(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="a job's state, round x/y, last metrics per site, error")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true", help="the whole job as JSON, for scripts")
    _client_flags(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("jobs", help="list your jobs")
    p.add_argument("--json", action="store_true")
    _client_flags(p)
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("logs", help="each site's job output, per round")
    p.add_argument("job_id")
    p.add_argument("--site", help="only this site")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    p.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    _client_flags(p)
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("job_id")
    _client_flags(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("compare", help="jobs side by side: differing settings, final metrics")
    p.add_argument("job_ids", nargs="+", help="2 to 8 job ids; the first is the baseline")
    p.add_argument("--json", action="store_true", help="the API's answer, curves included")
    _client_flags(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "twin", help="run a job's recipe centrally on its pooled shards; print the FL gap"
    )
    p.add_argument("job_id")
    p.add_argument("--wait", action="store_true", help="wait for the twin, then print the gap")
    p.add_argument("--json", action="store_true", help="with --wait: the comparison as JSON")
    _client_flags(p)
    p.set_defaults(func=cmd_twin)

    p = sub.add_parser(
        "evaluate", help="evaluate a checkpoint on your own held-out data (the job's eval fn)"
    )
    p.add_argument("checkpoint", help="checkpoint.pt, GLOBAL_MODEL_round_N.pt or .safetensors")
    p.add_argument("--job", required=True, help="the job folder the checkpoint belongs to")
    p.add_argument("--data", required=True, help="folder your fl_evaluate_model reads (DATA_ROOT)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("download", help="download a job's final (or a round's) checkpoint")
    p.add_argument("job_id")
    p.add_argument("-o", "--output", default=None)
    p.add_argument("--round", type=int, default=None)
    _client_flags(p)
    p.set_defaults(func=cmd_download)

    _register_platform_commands(sub)
    return parser


def _register_platform_commands(sub: Any) -> None:
    """Add `up`, `worker`, `aggregator`, `api`, ... from the launcher (same distribution).

    The launcher sits above the server packages, which sit above this SDK: the SDK must not
    import it at module level, so the `resonfl` command reaches up only here, at parse time.
    `resonfl_server.launcher.commands` imports only the standard library at module level, so this works
    without the server extras; each command imports what it runs.
    """
    from resonfl_server.launcher import (
        commands,
    )  # lazy: the one arrow from the SDK up to the launcher

    commands.register(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except JobValidationError as exc:
        return _die(str(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # The client's errors (refused job, unknown id, failed job, server down) are
        # messages for the user, not tracebacks.
        import httpx  # lazy: errors only

        if isinstance(exc, httpx.TransportError):
            return _die(f"cannot reach the server: {exc}", 1)
        if type(exc).__name__ in ("ApiError", "JobFailed") or isinstance(exc, OSError):
            return _die(_client_error(exc, args), 1)
        raise


def _client_error(exc: Exception, args: argparse.Namespace) -> str:
    detail = getattr(exc, "detail", None)
    if isinstance(detail, dict) and {"file", "message"} <= detail.keys():
        field = f": {detail['field']}" if detail.get("field") else ""
        return f"{detail['file']}{field}: {detail['message']}"
    if getattr(exc, "status", None) == 404 and getattr(args, "job_id", None):
        return f"job {args.job_id} not found (or not yours)"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
