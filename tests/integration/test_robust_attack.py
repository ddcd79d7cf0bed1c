"""One site attacks (sign-flipped, scaled updates) through the real executor, in process:
FedAvg collapses while the median and Krum stay within 2 points of the clean FedAvg run.

Digits on 5 sites (IID, so the robust rules' own price on non-IID data does not blur the
point; docs/results.md has the Dirichlet 0.1 table), 3 rounds x 15 local steps.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from resonfl.catalog import evaluate_on_test, make_job
from resonfl.catalog.attack import byzantine_source
from resonfl.catalog.inprocess import run_in_process

pytestmark = pytest.mark.integration

SITES, ROUNDS, STEPS = 5, 3, 15


def top1(tmp: Path, name: str, aggregator: str, attacked: bool) -> float:
    job = make_job(
        "digits", SITES, num_rounds=ROUNDS, local_steps=STEPS, warmup_steps=0,
        shards_dir=tmp / "shards", split="iid",
    )  # fmt: skip
    if attacked:
        source = byzantine_source(job.model.source, "site-3", scale=-10.0)
        job = job.model_copy(update={"model": job.model.model_copy(update={"source": source})})
    job.federation.aggregator_path = aggregator
    job.federation.aggregator_args = {} if aggregator.endswith("FedAvg") else {"max_bad_sites": 1}
    run = run_in_process(job.render(tmp / name), tmp / f"ws_{name}")
    return evaluate_on_test("digits", run.state, tmp / "shards")["top1"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    tmp = tmp_path_factory.mktemp("attack")
    return tmp, top1(tmp, "clean", "resonfl.fl.fedavg.FedAvg", attacked=False)


def test_fedavg_collapses_under_one_attacking_site(clean: tuple[Path, float]) -> None:
    tmp, clean_top1 = clean
    assert clean_top1 > 0.8, "the clean run learned"
    attacked = top1(tmp, "fedavg", "resonfl.fl.fedavg.FedAvg", attacked=True)
    assert attacked < clean_top1 - 0.3, f"FedAvg under attack: {attacked:.3f}"


@pytest.mark.parametrize(
    "aggregator", ["resonfl.fl.median.CoordinateMedian", "resonfl.fl.krum.Krum"]
)
def test_median_and_krum_stay_within_two_points_of_the_clean_run(
    clean: tuple[Path, float], aggregator: str
) -> None:
    tmp, clean_top1 = clean
    attacked = top1(tmp, aggregator.rsplit(".", 1)[1], aggregator, attacked=True)
    assert attacked >= clean_top1 - 0.02, f"{aggregator}: {attacked:.3f} vs clean {clean_top1:.3f}"
