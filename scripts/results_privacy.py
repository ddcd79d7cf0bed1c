"""What privacy and robustness cost on digits: top-1 and round time per aggregator.

Digits, 5 sites, Dirichlet(alpha=0.1) by label (split seed 0), 20 rounds x 20 local steps at
batch 32, the digits example's defaults; held-out top-1 on the global test.npz no site sees.
Five sites, not the four of the FedAvg table above, because Krum needs n >= 2f + 3 to
tolerate f = 1 bad site. Rows:

  FedAvg, CoordinateMedian, TrimmedMean (f=1), Krum (f=1), MultiKrum (f=1), each clean and
  with one attacking site (site-1 sends global - 10 x its update: sign-flipped, scaled);
  DP-SGD at target epsilon 1 / 3 / 8 (delta 1e-5, C = 1, noise calibrated per site) with the
  DP recipe (DP_RECIPE: plain SGD, large lr, batch 64, 5 local steps; the digits defaults
  leave DP-SGD at chance), and FedAvg with the same recipe and no noise (its clean run);
  DP-FedAvg (clip 1, noise multiplier 1 and 0.1); SecAgg+ when it is in the FL core.

Sites run through the job folder's own executor in process (resonfl.catalog.inprocess), the
FL core's fold_round aggregates. Round time = the run's wall time / rounds, in process (no
transport): compare rows with each other, on a quiet machine.

    python scripts/results_privacy.py                      # every row, 1 seed, into docs/results.md
    python scripts/results_privacy.py --only dp-sgd-eps1   # some rows (others from the cache)
    python scripts/results_privacy.py --only dp-sgd-eps8 --seeds 3   # a row as a mean of 3 runs

Each finished row is cached in --cache (JSON), so a rerun picks up where it stopped and
--only reruns just the named rows. A row the cache lacks (a lost or partial cache) is read
back from the table already in --out, so --only never turns the other rows into "not run". The table is written between the privacy markers of
docs/results.md; the rest of the file (scripts/results_digits.py) is kept.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import Counter
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from resonfl.catalog import evaluate_on_test, make_job
from resonfl.catalog.attack import byzantine_source
from resonfl.catalog.inprocess import run_in_process
from resonfl.catalog.shards import make_shards

ROOT = Path(__file__).resolve().parent.parent
SITES, ROUNDS, STEPS, ALPHA, SPLIT_SEED = 5, 20, 20, 0.1, 0
ATTACKER, SCALE = "site-1", -10.0
# DP-SGD's training settings (docs/privacy.md, "What a DP recipe looks like"): no momentum or
# Adam (they carry the noise forward / rescale it per weight), a constant large lr that the
# clipping keeps stable, fewer larger batches
DP_RECIPE: dict[str, Any] = {
    "optimizer": "sgd", "momentum": 0.0, "lr": 1.0, "batch_size": 64, "local_steps": 5,
    "lr_schedule": "constant", "warmup_steps": 0,
}  # fmt: skip
NO_NOISE = "fedavg-dp-recipe"
BEGIN, END = "<!-- privacy-table:begin -->", "<!-- privacy-table:end -->"


@dataclass(frozen=True)
class Row:
    key: str
    name: str
    path: str
    args: dict[str, Any] = field(default_factory=dict)
    attacked: bool = False
    training: dict[str, Any] = field(default_factory=dict)  # TrainingConfig overrides
    clean: str | None = None  # the row it is judged against; attacked rows: their clean row

    @property
    def clean_key(self) -> str | None:
        return self.clean or (self.key.removesuffix("-attacked") if self.attacked else None)


def _rows() -> list[Row]:
    rows = []
    for name, path, args in (
        ("FedAvg", "resonfl.fl.fedavg.FedAvg", {}),
        ("CoordinateMedian", "resonfl.fl.median.CoordinateMedian", {"max_bad_sites": 1}),
        ("TrimmedMean (f=1)", "resonfl.fl.median.TrimmedMean", {"max_bad_sites": 1}),
        ("Krum (f=1)", "resonfl.fl.krum.Krum", {"max_bad_sites": 1}),
    ):
        base = path.rsplit(".", 1)[1].lower()
        rows.append(Row(base, f"{name}, 0 attackers", path, args))
        rows.append(Row(f"{base}-attacked", f"{name}, 1 attacker", path, args, attacked=True))
    for eps in (1, 3, 8):
        rows.append(
            Row(
                f"dp-sgd-eps{eps}",
                f"DP-SGD, epsilon {eps} (delta 1e-5, C 1, DP recipe)",
                "resonfl.fl.dp_sgd.DPSGDFedAvg",
                {"target_epsilon": float(eps), "delta": 1e-5, "max_grad_norm": 1.0},
                training=DP_RECIPE,
                clean=NO_NOISE,
            )
        )
    rows.append(
        Row(
            NO_NOISE,
            "FedAvg, DP recipe, no noise (batch gradient clipped to 1)",
            "resonfl.fl.fedavg.FedAvg",
            training={**DP_RECIPE, "grad_clip": 1.0},
        )
    )
    rows.append(
        Row(
            "dp-fedavg-z1",
            "DP-FedAvg, noise multiplier 1 (clip 1)",
            "resonfl.fl.dp_fedavg.DPFedAvg",
            {"clip_norm": 1.0, "noise_multiplier": 1.0},
        )
    )
    try:
        from resonfl.fl.secagg import SecAggFedAvg  # noqa: F401  # lazy: the row needs it
    except ImportError:
        pass
    else:
        rows.append(Row("secagg", "SecAgg+ (FedAvg under masks)", "resonfl.fl.secagg.SecAggFedAvg"))
    # beyond the list, run last
    multikrum = "resonfl.fl.krum.MultiKrum"
    rows.append(
        Row("multikrum", "MultiKrum (f=1, keep n-f), 0 attackers", multikrum, {"max_bad_sites": 1})
    )
    rows.append(
        Row("multikrum-attacked", "MultiKrum (f=1, keep n-f), 1 attacker", multikrum,
            {"max_bad_sites": 1}, attacked=True)
    )  # fmt: skip
    for z in (0.1,):
        rows.append(
            Row(
                f"dp-fedavg-z{z:g}",
                f"DP-FedAvg, noise multiplier {z:g} (clip 1)",
                "resonfl.fl.dp_fedavg.DPFedAvg",
                {"clip_norm": 1.0, "noise_multiplier": z},
            )
        )
    return rows


ROWS = _rows()


def run_row(row: Row, seed: int, work: Path) -> dict[str, Any]:
    """Train one row with one training seed; held-out metrics, time per round, final epsilon."""
    training = {"local_steps": STEPS, **row.training}
    job = make_job("digits", SITES, num_rounds=ROUNDS, training_seed=seed, **training)
    source = (
        byzantine_source(job.model.source, ATTACKER, SCALE) if row.attacked else job.model.source
    )
    job = job.model_copy(
        update={
            "model": job.model.model_copy(update={"source": source}),
            "shards": {f"site-{i}": work / "shards" / f"site-{i}" for i in range(1, SITES + 1)},
        }
    )
    job.federation.aggregator_path = row.path
    job.federation.aggregator_args = dict(row.args)
    job_dir = job.render(work / f"{row.key}_seed{seed}")
    started = time.perf_counter()
    run = run_in_process(job_dir, work / f"ws_{row.key}_seed{seed}")
    elapsed = time.perf_counter() - started
    metrics = evaluate_on_test("digits", run.state, work / "shards")
    last = run.rounds[-1] if run.rounds else {}
    return {
        "top1": metrics["top1"],
        "val_loss": metrics["val_loss"],
        "rounds": len(run.rounds),
        "round_s": elapsed / max(len(run.rounds), 1),
        "epsilon": last.get("dp_epsilon"),
        "stopped": run.stopped,
    }


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        "| configuration | held-out top-1 | vs its clean run, pts | rounds run "
        "| s / round (in process) | epsilon spent (delta 1e-5) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in ROWS:
        got = results.get(row.key)
        if not got:
            lines.append(f"| {row.name} | not run | | | | |")
            continue
        top1 = statistics.fmean(r["top1"] for r in got)
        clean = results.get(row.clean_key) if row.clean_key else None
        vs = f"{100 * (top1 - statistics.fmean(r['top1'] for r in clean)):+.1f}" if clean else "—"
        eps = [r["epsilon"] for r in got if r.get("epsilon") is not None]
        eps_text = f"{statistics.fmean(eps):.2f}" if eps else "—"
        if len(got) > 1:  # a row run more often than the rest says so, with its range
            low, high = min(r["top1"] for r in got), max(r["top1"] for r in got)
            top1_text = f"{top1:.4f} (mean of {len(got)}: {low:.2f}-{high:.2f})"
        else:
            top1_text = f"{top1:.4f}"
        lines.append(
            f"| {row.name} | {top1_text} | {vs} | {got[0]['rounds']} "
            f"| {statistics.fmean(r['round_s'] for r in got):.2f} | {eps_text} |"
        )
    return "\n".join(lines)


def runs_text(results: dict[str, list[dict[str, Any]]]) -> str:
    """How many runs (training seeds) a row holds: "1 training seed(s)", or the usual count."""
    counts = Counter(len(got) for got in results.values() if got)
    usual = counts.most_common(1)[0][0] if counts else 1
    more = " a row; rows run more often say so in the top-1 cell" if len(counts) > 1 else ""
    return f"{usual} training seed(s){more}"


def render(results: dict[str, list[dict[str, Any]]], note: str) -> str:
    return f"""{BEGIN}
## Privacy and robustness on digits (Dirichlet 0.1, 5 sites)

Generated by `python scripts/results_privacy.py` ({runs_text(results)}; {note}).
Setup: as above but **5 sites** (Krum needs n >= 2f + 3 for f = 1), {ROUNDS} rounds x
{STEPS} local steps, the digits defaults (DP-SGD: the DP recipe below). "1 attacker": {ATTACKER} sends global
{SCALE:+g} x its update every round (sign-flipped, ten times longer; the attack is a wrapper
of model_def.py, `resonfl/catalog/attack.py`, so it runs through the real executor).
DP-SGD uses the **DP recipe** instead of the digits defaults (which leave it at chance):
{recipe_text()}, so {ROUNDS} x {DP_RECIPE["local_steps"]} steps a site.
Each site clips each sample's gradient to C and calibrates its noise so that those steps
spend the target (epsilon is the worst site's after the last round). "FedAvg, DP recipe, no
noise" trains the same way without noise (its batch gradient clipped to 1, without which lr
{DP_RECIPE["lr"]:g} diverges): the DP-SGD rows' third column is against it, so it is what the
noise costs, and its own gap to clean FedAvg is what the recipe costs. DP-SGD's noise is
drawn from the OS, not the seed, so one run is one draw of it: rows run more than once give
their mean and range (and [privacy.md](privacy.md) the exploration behind the recipe).
DP-FedAvg: every site every round (sampling rate 1). Round time
is in process (no transport), from a loaded shared machine unless the line above says
otherwise: compare rows, not absolute seconds. What each guarantees: [privacy.md](privacy.md).

{table(results)}

Reading it: a robust rule is judged by its attacked row against FedAvg's attacked row (which
should collapse) and against its own clean row (the price of robustness on non-IID data).
DP rows are judged against the clean FedAvg row, DP-SGD rows also against the DP recipe
without noise. One seed is one run: differences of a
point or two are within noise (one test image = 0.28 points; see the intervals above for
how much seeds move a FedAvg row).
{reading(results)}
{END}
"""


def recipe_text() -> str:
    """DP_RECIPE in words, for the table's setup text."""
    r = DP_RECIPE
    return (
        f"{r['optimizer'].upper()} without momentum, constant lr {r['lr']:g} (no warmup), "
        f"batch {r['batch_size']}, {r['local_steps']} local steps a round"
    )


def reading(results: dict[str, list[dict[str, Any]]]) -> str:
    """One line per finished row: points against clean FedAvg (and its own clean run)."""

    def top1(key: str) -> float | None:
        got = results.get(key)
        return statistics.fmean(r["top1"] for r in got) if got else None

    base = top1("fedavg")
    if base is None:
        return ""
    lines = []
    for row in ROWS:
        value = top1(row.key)
        if value is None or row.key == "fedavg":
            continue
        line = f"- {row.name}: {100 * (value - base):+.1f} points against clean FedAvg"
        own = top1(row.clean_key) if row.clean_key else None
        if own is not None and row.key != "fedavg-attacked":
            what = "the same recipe without noise" if row.clean else "its own clean run"
            line += f", {100 * (value - own):+.1f} against {what}"
        got = results[row.key][0]
        if got.get("stopped"):
            line += f" (stopped after {got['rounds']} rounds: {got['stopped']})"
        lines.append(line + ".")
    return "\n".join(lines)


def write(out: Path, block: str) -> None:
    text = out.read_text(encoding="utf-8") if out.is_file() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block
    out.write_text(text, encoding="utf-8")


def _read(cache: Path) -> dict[str, list[dict[str, Any]]]:
    return json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}


def from_table(text: str) -> dict[str, list[dict[str, Any]]]:
    """The rows already in a results.md privacy table, by key (for rows the cache lacks).

    A row is matched by its configuration name; the table has no per-seed values, so each
    becomes one entry holding the table's means, marked ``from_table``. Rows "not run", or
    whose name no longer matches a row of this script, are left out."""
    if BEGIN not in text or END not in text:
        return {}
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    by_name = {row.name: row.key for row in ROWS}
    stopped = dict(re.findall(r"^- (.+?): .*\(stopped after \d+ rounds: (.+)\)\.$", block, re.M))
    found: dict[str, list[dict[str, Any]]] = {}
    for line in block.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] not in by_name or cells[1] == "not run":
            continue
        name, top1, _, rounds, round_s, eps = cells
        found[by_name[name]] = [
            {
                "top1": float(top1.split()[0]),  # "0.61 (mean of 3: ...)": the mean only
                "rounds": int(rounds),
                "round_s": float(round_s),
                "epsilon": None if eps == "—" else float(eps),
                "stopped": stopped.get(name),
                "from_table": True,
            }
        ]
    return found


def _known(cache: Path, out: Path) -> dict[str, list[dict[str, Any]]]:
    """The cache's rows, and for keys it lacks, the rows already in the table of `out`."""
    table_rows = from_table(out.read_text(encoding="utf-8")) if out.is_file() else {}
    return {**table_rows, **_read(cache)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per row")
    parser.add_argument("--only", nargs="*", default=None, help="row keys to (re)run")
    parser.add_argument("--cache", type=Path, default=ROOT / "docs" / "results_privacy.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--note", default="s / round measured on this machine")
    parser.add_argument("--list", action="store_true", help="print the row keys and exit")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="a quick smoke run: fewer")
    ns = parser.parse_args(argv)
    globals()["ROUNDS"] = ns.rounds
    if ns.list:
        print("\n".join(f"{r.key}: {r.name}" for r in ROWS))
        return 0
    unknown = set(ns.only or []) - {r.key for r in ROWS}
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; --list shows them")
    # a row the cache lacks but the table has is kept from the table, not reported "not run"
    cache = _known(ns.cache, ns.out)
    cached = _read(ns.cache)  # without --only, rerun what the cache lacks (a lost cache: all)
    todo = [r for r in ROWS if (r.key in ns.only if ns.only is not None else r.key not in cached)]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_shards("digits", work / "shards", SITES, "dirichlet", ALPHA, SPLIT_SEED)
        for row in todo:
            done = [run_row(row, seed, work) for seed in range(ns.seeds)]
            print(f"{row.name}: {done}", flush=True)
            # merge with what is on disk now: another run may have added rows meanwhile
            cache = {**_known(ns.cache, ns.out), row.key: done}
            ns.cache.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
            write(ns.out, render(cache, ns.note))
    cache = _known(ns.cache, ns.out) or cache
    write(ns.out, render(cache, ns.note))
    print(table(cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
