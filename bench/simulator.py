"""Simulator benchmark, ResonFL's side: digits, 4 sites x 20 rounds x 20 local steps, end to end.

    .venv/bin/python bench/simulator.py [--sites 4] [--rounds 20] [--runs 3] [--json out.json]
    .venv/bin/python bench/simulator.py --peer flower   # and Flower's simulation, same job

Renders the catalog's digits example once (`resonfl init --example digits J`; its
TrainingConfig already has ``local_steps: 20``), then times `resonfl simulate J --sites N
--rounds R` as a whole process, start-up included: Python and torch imports, the initial model
built in the sandbox, one job process per site (kept for the whole run), every round. Prints
each run's wall time, the first round (which pays the job processes' start) and the median of
the others, and the held-out top-1 of the final checkpoint, so a faster run that learned less
shows. Another benchmark calls `run_simulator` (one run, a dict back) for a side-by-side table.

`--peer flower` runs the same job in Flower's simulation engine after each of our runs
(bench/flower_digits.py in bench/.venv-flower; make it with `bash bench/setup_flower.sh`):
the job's own model_def and training loop on the same shards, one Ray actor per site, timed
the same way (the whole process), and prints both and ResonFL / Flower.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESONFL = [sys.executable, "-m", "resonfl.cli"]
BENCH = Path(__file__).resolve().parent
FLOWER_PY = BENCH / ".venv-flower" / "bin" / "python"


def render_digits(job_dir: Path, sites: int = 4) -> Path:
    """`resonfl init --example digits` into ``job_dir`` (replaced if it exists)."""
    subprocess.run(
        [*RESONFL, "init", "--example", "digits", "--sites", str(sites), "--force", str(job_dir)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return job_dir


def run_simulator(
    job_dir: Path, workspace: Path, sites: int = 4, rounds: int = 20
) -> dict[str, Any]:
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


def run_flower(job_dir: Path, sites: int = 4, rounds: int = 20) -> dict[str, Any]:
    """Time one Flower simulation process on the same rendered job; its figures as a dict."""
    if not FLOWER_PY.is_file():
        raise SystemExit(f"--peer flower needs {FLOWER_PY}: run bash bench/setup_flower.sh")
    argv = [str(FLOWER_PY), str(BENCH / "flower_digits.py"), "--job", str(job_dir)]
    argv += ["--sites", str(sites), "--rounds", str(rounds)]
    env = {**os.environ, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    wall = time.monotonic() - started
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"flower peer failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1])
    walls = [float(r["round_s"]) for r in out["rounds"]]
    return {
        "engine": "flower simulation",
        "sites": sites,
        "rounds": rounds,
        "local_steps": 20,
        "wall_s": round(wall, 3),
        "first_round_s": round(walls[0], 3),
        "round_s_median": round(statistics.median(walls[1:] or walls), 3),
        "held_out_top1": round(float(out["held_out_top1"]), 4),
    }


def _line(name: str, run: dict[str, Any]) -> str:
    return (
        f"{name}: {run['wall_s']:.2f} s end to end; round 1 {run['first_round_s']:.2f} s, "
        f"median of the others {run['round_s_median']:.2f} s; held-out top-1 "
        f"{run['held_out_top1']:.4f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument("--peer", choices=["flower"], help="also run Flower's simulation")
    args = parser.parse_args(argv)
    runs, peers = [], []
    with tempfile.TemporaryDirectory(prefix="resonfl-bench-sim-") as tmp:
        job = render_digits(Path(tmp) / "J", args.sites)
        for i in range(args.runs):  # ours and Flower's in turn, so load drifts hit both
            run = run_simulator(job, Path(tmp) / f"ws{i}", args.sites, args.rounds)
            runs.append(run)
            print(_line(f"run {i + 1}, ResonFL", run), flush=True)
            if args.peer:
                peer = run_flower(job, args.sites, args.rounds)
                peers.append(peer)
                print(_line(f"run {i + 1}, Flower ", peer), flush=True)
    head = f"digits, {args.sites} sites x {args.rounds} rounds x 20 steps"
    for name, rows in (("ResonFL simulate", runs), ("Flower simulation", peers)):
        if rows:
            walls = sorted(r["wall_s"] for r in rows)
            print(
                f"{head}, {name}: min {walls[0]:.2f} s, median {statistics.median(walls):.2f} s, "
                f"max {walls[-1]:.2f} s"
            )
    if peers:
        ours = statistics.median(r["wall_s"] for r in runs)
        theirs = statistics.median(r["wall_s"] for r in peers)
        per_round = statistics.median(r["round_s_median"] for r in runs) / statistics.median(
            r["round_s_median"] for r in peers
        )
        pairs = [a["wall_s"] / b["wall_s"] for a, b in zip(runs, peers, strict=True)]
        print(
            f"ResonFL / Flower: end to end {ours / theirs:.2f}x (pairwise "
            f"{', '.join(f'{x:.2f}' for x in pairs)}), steady round {per_round:.2f}x"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"resonfl": runs, "flower": peers}, indent=2), encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
