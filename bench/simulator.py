"""Simulator benchmark, ResonFL's side: digits, 4 sites x 20 rounds x 20 local steps, end to end.

    .venv/bin/python bench/simulator.py [--sites 4] [--rounds 20] [--runs 3] [--json out.json]

Renders the catalog's digits example once (`resonfl init --example digits J`; its
TrainingConfig already has ``local_steps: 20``), then times `resonfl simulate J --sites N
--rounds R` as a whole process, start-up included: Python and torch imports, the initial model
built in the sandbox, one job process per site (kept for the whole run), every round. Prints
each run's wall time, the first round (which pays the job processes' start) and the median of
the others, and the held-out top-1 of the final checkpoint, so a faster run that learned less
shows. Another benchmark calls `run_simulator` (one run, a dict back) for a side-by-side table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESONFL = [sys.executable, "-m", "resonfl.cli"]


def render_digits(job_dir: Path, sites: int = 4) -> Path:
    """`resonfl init --example digits` into ``job_dir`` (replaced if it exists)."""
    subprocess.run(
        [*RESONFL, "init", "--example", "digits", "--sites", str(sites), "--force", str(job_dir)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return job_dir


def run_simulator(job_dir: Path, workspace: Path, sites: int = 4, rounds: int = 20) -> dict[str, Any]:
    """Time one `resonfl simulate` process on a rendered job; its figures as a dict."""
    from resonfl.catalog import evaluate_on_test  # lazy: numpy
    from resonfl.fl.shareable import load_weights  # lazy: torch

    argv = [*RESONFL, "simulate", str(job_dir), "--sites", str(sites), "--rounds", str(rounds)]
    argv += ["--workspace", str(workspace)]
    started = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - started
    summary = json.loads((workspace / "rounds.json").read_text(encoding="utf-8"))
    walls = [float(r["wall_s"]) for r in summary["rounds"]]
    held_out = evaluate_on_test(
        "digits", load_weights(workspace / "model_out" / "checkpoint.pt"), job_dir / "shards"
    )
    return {
        "engine": "resonfl simulate",
        "sites": sites,
        "rounds": rounds,
        "local_steps": 20,
        "wall_s": round(wall, 3),
        "first_round_s": round(walls[0], 3),
        "round_s_median": round(statistics.median(walls[1:] or walls), 3),
        "held_out_top1": round(float(held_out["top1"]), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="resonfl-bench-sim-") as tmp:
        job = render_digits(Path(tmp) / "J", args.sites)
        runs = []
        for i in range(args.runs):
            run = run_simulator(job, Path(tmp) / f"ws{i}", args.sites, args.rounds)
            runs.append(run)
            print(
                f"run {i + 1}: {run['wall_s']:.2f} s end to end; round 1 {run['first_round_s']:.2f}"
                f" s, median of the others {run['round_s_median']:.2f} s; held-out top-1 "
                f"{run['held_out_top1']:.4f}"
            )
    walls = sorted(r["wall_s"] for r in runs)
    print(
        f"digits, {args.sites} sites x {args.rounds} rounds x 20 steps: min {walls[0]:.2f} s, "
        f"median {statistics.median(walls):.2f} s, max {walls[-1]:.2f} s"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(runs, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
