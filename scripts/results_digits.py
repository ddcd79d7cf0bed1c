"""Centralized vs FedAvg on digits, and how much of the gap each client-side fix closes.

Digits, 4 sites, Dirichlet(alpha=0.1) by label (split seed 0, the same for every row),
20 rounds x 20 local steps at batch 32 = 400 optimizer steps per site; the centralized row is
one site holding all four sites' train/val data for 400 steps with the same schedule. Every
row uses the digits example's defaults except the two switches under test; held-out top-1
and loss are on the global test.npz no site ever sees. Every row runs the same training seeds
(model init and data order), so rows are compared seed by seed (paired): means come with 95 %
t-intervals over seeds, the share of the gap closed with a 95 % bootstrap interval, and a
claim whose interval includes zero is called within noise.

Sites run through the job folder's own custom_client_executor.run_task, in process
(resonfl.catalog.inprocess), with resonfl.fl's FedAvg; ``--check-simulate`` also runs the
default row once through resonfl.simulate (one child process per site and round).

    python scripts/results_digits.py            # writes docs/results.md
"""

from __future__ import annotations

import argparse
import math
import os
import platform
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
    from resonfl.simulate import simulate  # lazy: torch

    job = make_job("digits", SITES, num_rounds=ROUNDS, local_steps=STEPS)
    job = job.model_copy(
        update={"shards": {f"site-{i}": work / "shards" / f"site-{i}" for i in range(1, SITES + 1)}}
    )
    job_dir = job.render(work / "simulate_job")
    res = simulate(job_dir, work / "simulate_ws", progress=False)
    state = torch.load(res.checkpoint, map_location="cpu", weights_only=True)
    return evaluate_on_test("digits", state, work / "shards")


# two-sided 95 % Student t quantiles by degrees of freedom (a table: no scipy needed)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip
BOOTSTRAP = 4000


def t95(df: int) -> float:
    return next((T95[d] for d in sorted(T95) if d >= df), 1.96) if df >= 1 else math.inf


def ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and its 95 % t-interval over seeds (lo, hi equal the mean for one seed)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = t95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def paired(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """a - b seed by seed, in points: mean and 95 % t-interval."""
    return ci([100 * (x - y) for x, y in zip(a, b, strict=True)])


def share_ci(central: list[float], base: list[float], row: list[float]) -> tuple[float, float]:
    """95 % bootstrap interval (seeds resampled together) of the share of the gap closed."""
    rng = np.random.default_rng(0)
    c, b, r = (np.asarray(v) for v in (central, base, row))
    idx = rng.integers(0, len(c), size=(BOOTSTRAP, len(c)))
    gap = c[idx].mean(axis=1) - b[idx].mean(axis=1)
    ok = np.abs(gap) > 1e-9
    shares = 100 * (r[idx].mean(axis=1)[ok] - b[idx].mean(axis=1)[ok]) / gap[ok]
    lo, hi = np.percentile(shares, [2.5, 97.5])
    return float(lo), float(hi)


def _fmt(mean: float, lo: float, hi: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def table(results: list[list[dict[str, float]]]) -> str:
    top1 = [[r["top1"] for r in row] for row in results]
    loss = [[r["val_loss"] for r in row] for row in results]
    central, base = statistics.fmean(top1[0]), statistics.fmean(top1[1])
    gap = central - base
    lines = [
        "| configuration | held-out top-1, mean [95 % CI] | worst / best seed "
        "| held-out loss, mean [95 % CI] | vs restart baseline, pts [95 % CI] "
        "| share of the gap closed [95 % CI] |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, (name, _) in enumerate(ROWS):
        if i == 0:
            closed = "—"
        elif i == 1:
            closed = "0 % (baseline)"
        elif abs(gap) > 1e-9:
            lo, hi = share_ci(top1[0], top1[1], top1[i])
            closed = f"{100 * (statistics.fmean(top1[i]) - base) / gap:.0f} % [{lo:.0f}, {hi:.0f}]"
        else:
            closed = "n/a (no gap)"
        vs_base = "—" if i == 1 else _fmt(*paired(top1[i], top1[1]), digits=2)
        lines.append(
            f"| {name} | {_fmt(*ci(top1[i]))} | {min(top1[i]):.4f} / {max(top1[i]):.4f} "
            f"| {_fmt(*ci(loss[i]))} | {vs_base} | {closed} |"
        )
    return "\n".join(lines)


def per_seed(results: list[list[dict[str, float]]]) -> str:
    """Every run's top-1, so another machine can compare seed by seed."""
    seeds = len(results[0])
    head = "| configuration | " + " | ".join(f"seed {s}" for s in range(seeds)) + " |"
    rule = "| --- |" + " --- |" * seeds
    rows = [
        f"| {name} | " + " | ".join(f"{r['top1']:.4f}" for r in row) + " |"
        for (name, _), row in zip(ROWS, results, strict=True)
    ]
    return "\n".join([head, rule, *rows])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="training seeds per row (>= 5)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument(
        "--check-simulate",
        action="store_true",
        help="also run the default row (seed 0) through resonfl.simulate",
    )
    ns = parser.parse_args(argv)
    if ns.seeds < 2:
        parser.error("--seeds must be at least 2 for an interval (the docs use 5)")
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
    old = ns.out.read_text(encoding="utf-8") if ns.out.is_file() else ""
    begin, end = "<!-- privacy-table:begin -->", "<!-- privacy-table:end -->"
    if begin in old and end in old:  # scripts/results_privacy.py's section stays
        text = (
            text.rstrip("\n")
            + "\n\n"
            + begin
            + old.split(begin, 1)[1].split(end, 1)[0]
            + end
            + "\n"
        )
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
    default_seed0 = results[3][0]["top1"]
    sim = (
        f"\nCross-check through `resonfl.simulate` (a sandboxed process per site, the "
        f"persistor's own initial model), default row, seed 0, one run: held-out top-1 "
        f"{simulated['top1']:.4f}, loss {simulated['val_loss']:.4f} (the in-process run of the "
        f"same seed: {default_seed0:.4f}; see below for why they may differ).\n"
        if simulated
        else ""
    )
    return f"""# Results: centralized vs FedAvg on digits

Generated by `python scripts/results_digits.py{" --check-simulate" if simulated else ""}`
({elapsed:.0f} s on {machine()}).

Setup: scikit-learn digits, held-out test set of 20 % (stratified, never given to a site);
the rest split over {SITES} sites by Dirichlet(alpha={ALPHA}) on the label (split seed
{SPLIT_SEED}, the same split for every row), each site keeping 20 % of its share as its own
validation split. FedAvg rows: {ROUNDS} rounds x {STEPS} local steps, batch 32, FedAvg
weighted by samples. Centralized row: one site holding the union of the four sites' train
and val data, {ROUNDS * STEPS} steps with the same warmup + cosine schedule. Every row has the
same total optimizer steps per site and the digits example's defaults ({settings}); only
`continuous_schedule` and `persist_optimizer_state` change.

Statistics: {seeds} training seeds (model init and data order), the same seeds in every row,
so rows are compared seed by seed. Intervals are 95 %: a Student t-interval over the seeds for
means and paired differences, and a bootstrap over seeds ({BOOTSTRAP} resamples) for "share of
the gap closed" = (row − restart baseline) / (centralized − restart baseline) on top-1. With
{seeds} seeds the intervals are wide; a claim whose interval includes zero is reported as
within noise, not as a finding.

Execution: each site's round runs through the job folder's own
`custom_client_executor.run_task` (the code the child process runs: task fields, weights
files in and out, result file), in process for speed (`resonfl.catalog.inprocess`), and
`resonfl.fl.fedavg.fedavg` aggregates. Without the continuous schedule each round replays
the whole warmup + cosine shape in its own {STEPS} steps.

{table(results)}
{sim}
{reading(results, n_test)}

## Every run (held-out top-1)

{per_seed(results)}

## Which numbers vary across machines

- Every top-1 above can move by one or a few test images (1 image = {100 / n_test:.2f} points)
  on another machine of the same class: float32 sums in the CPU kernels run in an order that
  depends on the CPU's vector width and the thread count, and 400 optimizer steps amplify the
  last-bit differences.
- The rows need not move alike: in the one cross-machine comparison on record (issue 13, three
  seeds), only the restart baseline moved (0.9554 there against 0.9499 in this table's
  predecessor), enough to turn "share of the gap closed" from 58 % / 75 % into 44 % / 67 %.
  Compare machines seed by seed with the table above, and claims by their intervals, never by
  a single run or a single share.
- The `resonfl.simulate` cross-check runs each site in its own process with
  `OMP_NUM_THREADS` = CPUs / sites, so its thread count (and its last bits) follows the
  machine's core count: it agrees with the in-process row only up to that noise.
- The elapsed time depends on the machine and its load; the intervals and the verdicts in
  "Reading it" are what should carry over.
"""


def reading(results: list[list[dict[str, float]]], n_test: int) -> str:
    """How to read the table: each claim with its interval, and said plainly when in noise."""
    top1 = [[r["top1"] for r in row] for row in results]
    central, base, cont, default = top1
    d_mean, d_lo, d_hi = paired(central, default)  # points the default row is behind
    if d_hi <= 1.0:
        within = "met: the whole interval is under 1 point"
    elif d_mean <= 1.0:
        within = "met on the mean, but the interval reaches past 1 point: within noise"
    else:
        within = "missed"
    m, lo, hi = ci(default)
    if lo >= 0.96:
        floor = "met: the whole interval is at or above 0.96"
    elif m >= 0.96:
        floor = f"met on the mean only: the interval goes down to {lo:.4f}"
    else:
        floor = "missed"
    return f"""Reading it:
- Target "within 1 point of centralized": the default row is {_fmt(d_mean, d_lo, d_hi, 2)}
  points behind, seed by seed ({within}).
- Target "top-1 ≥ 0.96": the default row's mean is {_fmt(m, lo, hi)} ({floor}); its worst
  seed gives {min(default):.4f}.
- {_claim("The continuous schedule", cont, base)}
- {_claim("Persisted Adam on top of the continuous schedule", default, cont)}
- {_claim("Both fixes together", default, base)}
- The test set has {n_test} images, so one image is {100 / n_test:.2f} points: the differences
  between the FL rows are a few images each, which is why {len(default)} seeds still give
  wide intervals.
- Same optimizer steps, not the same samples: the four FedAvg sites together see four times
  as many batches as the centralized run.
- The digits defaults were not tuned for this table; they are the example's first settings."""


def _claim(what: str, row: list[float], ref: list[float]) -> str:
    mean, lo, hi = paired(row, ref)
    verdict = (
        "a real gain: the interval excludes zero"
        if lo > 0
        else "a real loss: the interval excludes zero"
        if hi < 0
        else "within noise: the interval includes zero"
    )
    return f"{what}: {_fmt(mean, lo, hi, 2)} points, {verdict}."


if __name__ == "__main__":
    sys.exit(main())
