"""Centralized vs FedAvg on digits, and how much of the gap each client-side fix closes.

Digits, 4 sites, Dirichlet(alpha=0.1) by label (split seed 0, the same for every row),
20 rounds x 20 local steps at batch 32 = 400 optimizer steps per site; the centralized row is
one site holding all four sites' train/val data for 400 steps with the same schedule. Every
row uses the digits example's defaults except the two switches under test; held-out top-1
and loss are on the global test.npz no site ever sees; mean ± std over training seeds.

Sites run through the job folder's own custom_client_executor.run_task, in process
(resonfl.catalog.inprocess), with resonfl.fl's FedAvg; ``--check-simulate`` also runs the
default row once through resonfl.simulate (one child process per site and round).

    python scripts/results_digits.py            # writes docs/results.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resonfl.catalog import evaluate_on_test, get_example, make_job
from resonfl.catalog.inprocess import run_in_process
from resonfl.catalog.shards import make_shards, merge_npz_shards

ROOT = Path(__file__).resolve().parent.parent
SITES, ROUNDS, STEPS, ALPHA, SPLIT_SEED = 4, 20, 20, 0.1, 0
ROWS: list[tuple[str, dict[str, Any]]] = [
    ("Centralized (1 site, all data, 400 steps)", {}),
    (
        "FedAvg, LR restarts + optimizer rebuilt every round",
        {"continuous_schedule": False, "persist_optimizer_state": False},
    ),
    (
        "FedAvg + continuous LR schedule",
        {"continuous_schedule": True, "persist_optimizer_state": False},
    ),
    (
        "FedAvg + continuous schedule + persisted Adam (default)",
        {"continuous_schedule": True, "persist_optimizer_state": True},
    ),
]


def run_row(index: int, overrides: dict[str, Any], seed: int, work: Path) -> dict[str, float]:
    """Train one row with one training seed; return held-out test metrics."""
    shards = work / "shards"
    job_dir = work / f"row{index}_seed{seed}"
    if index == 0:
        job = make_job("digits", 1, num_rounds=1, local_steps=ROUNDS * STEPS, training_seed=seed)
        central = merge_npz_shards(
            [shards / f"site-{i}" for i in range(1, SITES + 1)], job_dir / "shards" / "site-1"
        )
        job = job.model_copy(update={"shards": {"site-1": central}})
    else:
        job = make_job(
            "digits", SITES, num_rounds=ROUNDS, local_steps=STEPS, training_seed=seed, **overrides
        )
        job = job.model_copy(
            update={"shards": {f"site-{i}": shards / f"site-{i}" for i in range(1, SITES + 1)}}
        )
    job.render(job_dir)
    run = run_in_process(job_dir, work / f"ws_row{index}_seed{seed}")
    return evaluate_on_test("digits", run.state, shards)


def check_simulate(work: Path) -> dict[str, float]:
    from resonfl.simulate import simulate

    job = make_job("digits", SITES, num_rounds=ROUNDS, local_steps=STEPS)
    job = job.model_copy(
        update={"shards": {f"site-{i}": work / "shards" / f"site-{i}" for i in range(1, SITES + 1)}}
    )
    job_dir = job.render(work / "simulate_job")
    res = simulate(job_dir, work / "simulate_ws", progress=False)
    state = torch.load(res.checkpoint, map_location="cpu", weights_only=True)
    return evaluate_on_test("digits", state, work / "shards")


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(results: list[list[dict[str, float]]]) -> str:
    top1 = [[r["top1"] for r in row] for row in results]
    loss = [[r["val_loss"] for r in row] for row in results]
    central, base = statistics.fmean(top1[0]), statistics.fmean(top1[1])
    gap = central - base
    lines = [
        "| configuration | held-out top-1 | held-out loss | gap to centralized (pts) "
        "| share of the gap closed |",
        "| --- | --- | --- | --- | --- |",
    ]
    for i, (name, _) in enumerate(ROWS):
        t_mean, t_std = mean_std(top1[i])
        l_mean, l_std = mean_std(loss[i])
        row_gap = 100 * (central - t_mean)
        if i == 0:
            closed = "—"
        elif i == 1:
            closed = "0 % (baseline)"
        else:
            closed = f"{100 * (t_mean - base) / gap:.0f} %" if abs(gap) > 1e-9 else "n/a (no gap)"
        lines.append(
            f"| {name} | {t_mean:.4f} ± {t_std:.4f} | {l_mean:.4f} ± {l_std:.4f} "
            f"| {row_gap:+.2f} | {closed} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument(
        "--check-simulate",
        action="store_true",
        help="also run the default row (seed 0) through resonfl.simulate",
    )
    ns = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_shards("digits", work / "shards", SITES, "dirichlet", ALPHA, SPLIT_SEED)
        results = []
        for i, (name, overrides) in enumerate(ROWS):
            row = [run_row(i, overrides, seed, work) for seed in range(ns.seeds)]
            print(f"{name}: " + ", ".join(f"{r['top1']:.4f}" for r in row), flush=True)
            results.append(row)
        simulated = check_simulate(work) if ns.check_simulate else None
        with np.load(work / "shards" / "test.npz") as test:
            n_test = len(test["y"])
    text = render(results, ns.seeds, simulated, time.time() - started, n_test)
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(text, encoding="utf-8")
    print(table(results))
    print(
        f"\nwrote {ns.out}; regenerate with: python scripts/results_digits.py"
        + (" --check-simulate" if ns.check_simulate else "")
    )
    return 0


def render(
    results: list[list[dict[str, float]]],
    seeds: int,
    simulated: dict[str, float] | None,
    elapsed: float,
    n_test: int,
) -> str:
    training = get_example("digits").training
    settings = ", ".join(f"{k}={v}" for k, v in training.items() if k != "seed")
    sim = (
        f"\nCross-check through `resonfl.simulate` (child process per site and round, the "
        f"persistor's own initial model), default row, one run: held-out top-1 "
        f"{simulated['top1']:.4f}, loss {simulated['val_loss']:.4f}.\n"
        if simulated
        else ""
    )
    return f"""# Results: centralized vs FedAvg on digits

Generated by `python scripts/results_digits.py` ({elapsed:.0f} s on this machine's CPU).

Setup: scikit-learn digits, held-out test set of 20 % (stratified, never given to a site);
the rest split over {SITES} sites by Dirichlet(alpha={ALPHA}) on the label (split seed
{SPLIT_SEED}, the same split for every row), each site keeping 20 % of its share as its own
validation split. FedAvg rows: {ROUNDS} rounds x {STEPS} local steps, batch 32, FedAvg
weighted by samples. Centralized row: one site holding the union of the four sites' train
and val data, {ROUNDS * STEPS} steps with the same warmup + cosine schedule. Every row has the
same total optimizer steps per site and the digits example's defaults ({settings}); only
`continuous_schedule` and `persist_optimizer_state` change. Mean ± std over {seeds} training
seeds (model init and data order). "Share of the gap closed" is
(row − restart baseline) / (centralized − restart baseline) on top-1.

Execution: each site's round runs through the job folder's own
`custom_client_executor.run_task` (the code the child process runs: task fields, weights
files in and out, result file), in process for speed (`resonfl.catalog.inprocess`), and
`resonfl.fl.fedavg.fedavg` aggregates. Without the continuous schedule each round replays
the whole warmup + cosine shape in its own {STEPS} steps.

{table(results)}
{sim}
{reading(results, n_test)}
"""


def reading(results: list[list[dict[str, float]]], n_test: int) -> str:
    """How to read the table, with the numbers that decide the targets."""
    top1 = [[r["top1"] for r in row] for row in results]
    central, base, cont, default = (statistics.fmean(t) for t in top1)
    gap = central - base
    share = (lambda v: f"{100 * (v - base) / gap:.0f} %") if abs(gap) > 1e-9 else (lambda v: "n/a")
    within = "met" if central - default <= 0.01 else "missed"
    floor = "met" if default >= 0.96 else "missed"
    return f"""Reading it:
- Targets: default row {100 * (central - default):+.2f} points from centralized (target: within
  1 point, {within}); default row held-out top-1 {default:.4f} (target ≥ 0.96, {floor}; its
  worst seed gives {min(top1[3]):.4f}).
- The continuous schedule alone closes {share(cont)} of the gap and both fixes together
  {share(default)} (the seed reports about 62 % and 50-70 % on its Food-101 job).
- The test set has {n_test} images, so one image is
  {100 / n_test:.2f} points: the differences between the FL rows are a few images each
  and the stds overlap, so how the credit splits between the two fixes is indicative only.
- Same optimizer steps, not the same samples: the four FedAvg sites together see four times
  as many batches as the centralized run.
- The digits defaults were not tuned for this table; they are the example's first settings."""


if __name__ == "__main__":
    sys.exit(main())
