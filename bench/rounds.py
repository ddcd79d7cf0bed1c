"""Round benchmark: ResonFL's real platform vs. the transport floor (and Flower with --peer).

Brings the platform up as `resonfl up` does (API, aggregator and 4 site workers as processes,
Redis; SQLite unless --database-url), submits one job per model with the SDK and reads each
round's timings back: a CIFAR-size ResNet-18 and ResNet-50 (bench/model_def.py, no
torchvision), every site taking ONE SGD step on 8 random 3x32x32 images per round, FedAvg,
6 rounds, median of rounds 2-6 (round 1 includes the first bundle download).

    .venv/bin/python bench/rounds.py [--models resnet18,resnet50] [--sites 4] [--rounds 6]
        [--peer flower] [--json out/bench/rounds.json]

Per model it prints the median round, the slowest site's training, the overhead (round minus
that training) and its parts, taken from the slowest site's own phase log (one "round timings"
line per site and round in its worker log) and the aggregator's timings:
  site load/save  job process: global weights in, model built, update written (run - train)
  download        the global weights over HTTP to the site (sha256 checked while streaming)
  upload          the update over HTTP, stored and hashed, the result recorded
  aggregation     the aggregator's task: fold the updates, persist, open the next round
  dispatch        the rest: Celery delivery of train/aggregate tasks, the site's bookkeeping
and the floor measured in the same run on the same machine: safetensors save + load of the
state dict, and FedAvg of 4 state dicts. `--peer flower` runs the same models and step in
Flower's simulation engine (bench/flower_peer.py, in bench/.venv-flower; make it with
bench/setup_flower.sh) and prints ResonFL / Flower ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

MODELS = {"resnet18": 18, "resnet50": 50}
FLOWER_PY = BENCH / ".venv-flower" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_avg() -> float:
    return os.getloadavg()[0]


# ------------------------------------------------------------------------------ the job
def bench_job(depth: int, sites: int, rounds: int, aggregator: str | None = None) -> Any:
    from resonfl.config import FederationConfig, ModelConfig, TrainingConfig  # after sys.path setup
    from resonfl.job import Job  # after sys.path setup

    return Job(
        name=f"bench-resnet{depth}",
        model=ModelConfig(
            source=(BENCH / "model_def.py").read_text("utf-8"),
            class_name="CifarResNet",
            args={"depth": depth},
        ),
        # the step itself is model_def.sgd_step; these only keep the executor from loading
        # optimizer state it never wrote
        training=TrainingConfig(
            optimizer="sgd", lr=0.01, batch_size=8, local_steps=1, persist_optimizer_state=False
        ),
        federation=FederationConfig(
            sites=[f"site-{i}" for i in range(1, sites + 1)],
            num_rounds=rounds,
            **({"aggregator_path": aggregator} if aggregator else {}),
        ),
    )


# ------------------------------------------------------------------------------ the floor
def transport_floor(depth: int, sites: int, work: Path) -> dict[str, float]:
    """What moving and averaging these weights costs at the least, here and now: safetensors
    save + load of the state dict (the best each side can do per round) and FedAvg of 4."""
    import torch  # lazy: torch
    from safetensors.torch import load_file, save_file  # lazy: torch

    from model_def import CifarResNet  # bench/ on sys.path

    state = {k: v.contiguous() for k, v in CifarResNet(depth).state_dict().items()}
    path = work / f"floor-{depth}.safetensors"
    saves, loads, avgs = [], [], []
    for _ in range(3):
        t0 = time.perf_counter()
        save_file(state, str(path))
        t1 = time.perf_counter()
        loaded = load_file(str(path))
        t2 = time.perf_counter()
        updates = [loaded] * sites
        out = {}
        for key, first in loaded.items():
            if first.is_floating_point():
                acc = first * (1 / sites)
                for upd in updates[1:]:
                    acc.add_(upd[key], alpha=1 / sites)
                out[key] = acc
            else:
                out[key] = first.clone()
        t3 = time.perf_counter()
        saves.append(t1 - t0)
        loads.append(t2 - t1)
        avgs.append(t3 - t2)
    size = path.stat().st_size
    path.unlink()
    del torch  # only imported for the side effect of loading it before timing
    return {
        "bytes": size,
        "save_load_s": min(saves) + min(loads),
        "average_s": min(avgs),
        "floor_s": min(saves) + min(loads) + min(avgs),
    }


# ------------------------------------------------------------------------------ platform
def site_phases(log_dir: Path, job_id: int) -> dict[tuple[int, str], dict[str, float]]:
    """(round, site) -> the site's phase timings, from the workers' "round timings" lines."""
    phases: dict[tuple[int, str], dict[str, float]] = {}
    for path in log_dir.glob("worker-*.log"):
        site = path.stem.removeprefix("worker-")
        for line in path.read_text(errors="replace").splitlines():
            _, found, payload = line.partition("round timings ")
            if not found:
                continue
            try:
                data = json.loads(payload)
            except ValueError:
                continue
            if data.get("job") == job_id:
                phases[(int(data["round"]), site)] = data
    return phases


def round_rows(
    job: dict[str, Any], phases: dict[tuple[int, str], dict[str, float]]
) -> list[dict[str, Any]]:
    """One row per round: wall time, slowest training, overhead and its parts."""
    rows = []
    for rnd in job["rounds"]:
        t = rnd["timings"]
        if t.get("round_s") is None:  # not aggregated
            continue
        started = datetime.fromisoformat(rnd["started_at"]).timestamp()
        site_train = {
            r["site"]: r["train_s"]
            for r in rnd.get("results", [])
            if r["status"] == "done" and r["train_s"] is not None
        }
        slow = max(site_train, key=site_train.get) if site_train else None
        ph = phases.get((rnd["number"], slow or ""), {})
        train = float(t["train_s_max"])
        row = {
            "round": rnd["number"],
            "round_s": float(t["round_s"]),
            "train_s": train,
            "overhead_s": float(t["overhead_s"]),
            "aggregate_s": float(t.get("aggregate_s", 0.0)),
            "slowest_site": slow,
        }
        if ph:
            # the last upload to land decides when aggregation can start
            last = max(
                (p for (r, _), p in phases.items() if r == rnd["number"]),
                key=lambda p: (
                    p["start"] + p["prepare_s"] + p["download_s"] + p["run_s"] + p["upload_s"]
                ),
            )
            row.update(
                site_load_save_s=max(last["run_s"] - last["train_s"], 0.0),
                download_s=last["download_s"],
                upload_s=last["upload_s"],
                site_prepare_s=last["prepare_s"],
                dispatch_to_site_s=max(last["start"] - started, 0.0),
            )
            accounted = (
                row["site_load_save_s"] + row["download_s"] + row["upload_s"] + row["aggregate_s"]
            )
            row["dispatch_s"] = max(row["overhead_s"] - accounted, 0.0)
        rows.append(row)
    return rows


def run_platform(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from resonfl.client import Client  # after sys.path setup
    from resonfl_server.launcher.local import LocalPlatform  # after sys.path setup

    plat = LocalPlatform(
        data_dir=work / "platform",
        port=free_port(),
        sites=args.sites,
        redis_url=args.redis_url,
        database_url=args.database_url,
        secret_key="bench-secret-" + "x" * 20,
    )
    out: dict[str, Any] = {}
    try:
        t0 = time.monotonic()
        plat.start()
        out["platform_start_s"] = time.monotonic() - t0
        client = Client(plat.url, plat.admin_token)
        for name in args.models:
            job = bench_job(MODELS[name], args.sites, args.rounds, args.aggregator)
            job_dir = job.render(work / f"job-{name}")
            load_before = load_avg()
            started = time.monotonic()
            job_id = client.submit(job_dir)
            job = client.wait(job_id, progress=False, timeout=args.timeout)
            total = time.monotonic() - started
            if job["status"] != "finished":
                raise RuntimeError(f"{name}: job {job_id} {job['status']}: {job.get('error')}")
            rows = round_rows(job, site_phases(plat.log_dir, job_id))
            out[name] = {
                "job_id": job_id,
                "job_s": total,
                "rounds": rows,
                "round0": round0_phases(job),
                "load_before": load_before,
                "load_after": load_avg(),
            }
    finally:
        plat.stop()
    return out


# ------------------------------------------------------------------------------ Flower
def run_flower(args: argparse.Namespace, name: str) -> dict[str, Any]:
    if not FLOWER_PY.is_file():
        raise SystemExit(f"--peer flower needs {FLOWER_PY}: run bash bench/setup_flower.sh")
    env = {**os.environ, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    threads = max(1, (os.cpu_count() or 1) // args.sites)  # as LocalPlatform caps job processes
    load_before = load_avg()
    proc = subprocess.run(
        [
            str(FLOWER_PY),
            str(BENCH / "flower_peer.py"),
            "--model",
            name,
            "--sites",
            str(args.sites),
            "--rounds",
            str(args.rounds),
            "--threads",
            str(threads),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=args.timeout,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"flower peer failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1])
    result["load_before"], result["load_after"] = load_before, load_avg()
    return result


# ------------------------------------------------------------------------------ report
def median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def round0_phases(job: dict[str, Any]) -> dict[str, Any]:
    """Where round 0 went, as the job store has it (the job page's round-0 table)."""
    first = next((r for r in job["rounds"] if r["number"] == 0), {"results": []})
    return {
        "init": job.get("init_phases") or {},
        "sites": {r["site"]: r.get("phases") or {} for r in first["results"]},
    }


def _most(sites: dict[str, dict[str, Any]], key: str) -> float | None:
    values = [p[key] for p in sites.values() if isinstance(p.get(key), int | float)]
    return max(values) if values else None


def summarise(
    name: str, ours: dict[str, Any], floor: dict[str, float], flower: dict[str, Any] | None
) -> dict[str, Any]:
    steady = [r for r in ours["rounds"] if r["round"] >= 1]  # rounds 2-6
    keys = [
        "round_s",
        "train_s",
        "overhead_s",
        "site_load_save_s",
        "download_s",
        "upload_s",
        "aggregate_s",
        "dispatch_s",
    ]
    summary: dict[str, Any] = {k: median(steady, k) for k in keys}
    first = next((r for r in ours["rounds"] if r["round"] == 0), None)
    summary["first_round_s"] = first["round_s"] if first else None
    round0 = ours.get("round0") or {"init": {}, "sites": {}}
    summary["r0_init_s"] = round0["init"].get("total_s")
    for key in ("prepare_s", "process_s", "data_s", "train_s"):
        summary[f"r0_{key}"] = _most(round0["sites"], key)
    summary.update(floor)
    summary["overhead_over_floor"] = summary["overhead_s"] / floor["floor_s"]
    summary["load"] = [ours["load_before"], ours["load_after"]]
    if flower:
        fl_steady = [r for r in flower["rounds"] if r["round"] >= 1]
        summary["flower_round_s"] = median(fl_steady, "round_s")
        summary["flower_first_round_s"] = (
            flower["rounds"][0]["round_s"] if flower["rounds"] else None
        )
        summary["round_over_flower"] = summary["round_s"] / summary["flower_round_s"]
        summary["flower_load"] = [flower["load_before"], flower["load_after"]]
    summary["targets"] = {
        "overhead <= 1.0 s": summary["overhead_s"] <= 1.0,
        "overhead <= 3x floor": summary["overhead_over_floor"] <= 3.0,
        "first round <= steady + 5 s": (summary["first_round_s"] or 0) <= summary["round_s"] + 5,
    }
    if flower:
        summary["targets"]["round <= Flower's"] = summary["round_over_flower"] <= 1.0
    if name == "resnet50":
        summary["targets"]["aggregation <= 0.3 s"] = (summary["aggregate_s"] or 0) <= 0.3
    return summary


def fmt(value: Any, unit: str = "s") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "met" if value else "NOT met"
    return f"{value:.2f}{'' if unit == 'x' else ' s'}" if unit != "x" else f"{value:.2f}x"


def print_table(summaries: dict[str, dict[str, Any]]) -> None:
    names = list(summaries)
    rows = [
        ("median round (rounds 2-6)", "round_s", "s"),
        ("slowest site's train", "train_s", "s"),
        ("overhead (round - train)", "overhead_s", "s"),
        ("  site load/save", "site_load_save_s", "s"),
        ("  download", "download_s", "s"),
        ("  upload", "upload_s", "s"),
        ("  aggregation", "aggregate_s", "s"),
        ("  dispatch + rest", "dispatch_s", "s"),
        ("first round (round 1)", "first_round_s", "s"),
        ("  site: bundle + data (max)", "r0_prepare_s", "s"),
        ("  site: process start (max)", "r0_process_s", "s"),
        ("  site: data load (max)", "r0_data_s", "s"),
        ("  site: first train (max)", "r0_train_s", "s"),
        ("  before it: initial weights", "r0_init_s", "s"),
        ("floor: save + load", "save_load_s", "s"),
        ("floor: FedAvg of 4", "average_s", "s"),
        ("overhead / floor", "overhead_over_floor", "x"),
        ("Flower simulation round", "flower_round_s", "s"),
        ("ResonFL / Flower", "round_over_flower", "x"),
    ]
    width = 28
    print("\n" + "".ljust(width) + "".join(n.rjust(12) for n in names))
    for label, key, unit in rows:
        if all(summaries[n].get(key) is None for n in names):
            continue
        print(
            label.ljust(width) + "".join(fmt(summaries[n].get(key), unit).rjust(12) for n in names)
        )
    print(
        "load avg (1 min) ours".ljust(width)
        + "".join(
            f"{summaries[n]['load'][0]:.1f}-{summaries[n]['load'][1]:.1f}".rjust(12) for n in names
        )
    )
    if any("flower_load" in summaries[n] for n in names):
        print(
            "load avg (1 min) Flower".ljust(width)
            + "".join(
                (
                    f"{summaries[n]['flower_load'][0]:.1f}-{summaries[n]['flower_load'][1]:.1f}"
                    if "flower_load" in summaries[n]
                    else "-"
                ).rjust(12)
                for n in names
            )
        )
    print("\ntargets:")
    for n in names:
        for target, met in summaries[n]["targets"].items():
            print(f"  {n:9} {target:30} {fmt(met)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="resnet18,resnet50", type=lambda s: [m for m in s.split(",") if m]
    )
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--peer", choices=["flower"], default=None)
    parser.add_argument(
        "--aggregator",
        default=None,
        help="aggregator class path (default FedAvg), e.g. resonfl.fl.secagg.SecAggFedAvg: "
        "what secure aggregation costs a round",
    )
    parser.add_argument("--json", type=Path, default=REPO / "out" / "bench" / "rounds.json")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {sorted(MODELS)}")

    print(
        f"{args.sites} sites, {args.rounds} rounds, one SGD step on 8 random 3x32x32 images "
        f"per round and site; {os.cpu_count()} cores, load {load_avg():.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="resonfl-bench-") as tmp:
        work = Path(tmp)
        floors = {m: transport_floor(MODELS[m], args.sites, work) for m in args.models}
        ours = run_platform(args, work)
        flower = {m: run_flower(args, m) for m in args.models} if args.peer else {}
    summaries = {m: summarise(m, ours[m], floors[m], flower.get(m)) for m in args.models}
    print_table(summaries)
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "platform": sys.platform,
            "uname": " ".join(os.uname()),
        },
        "summary": summaries,
        "platform": ours,
        "flower": flower,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
