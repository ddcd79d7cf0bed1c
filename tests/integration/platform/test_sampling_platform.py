"""Sites drawn at random each round on the real platform (four site workers): with
``sites_per_round`` = 2 only two sites are asked per round (the others get no task), and
DP-FedAvg's epsilon is the accountant's at sampling rate 2 / 4, computed here by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from test_platform_e2e import submit, wait_job

from resonfl.catalog import make_job
from resonfl.fl.accountant import ORDERS
from resonfl_server.launcher.local import LocalPlatform

pytestmark = pytest.mark.integration

Z, DELTA, ROUNDS = 1.0, 1e-5, 3


def test_two_of_four_sites_per_round_and_dp_fedavg_counts_the_sampling(
    platform4: LocalPlatform, tmp_path: Path
) -> None:
    job = make_job(
        "digits", sites=4, num_rounds=ROUNDS, local_steps=5, shards_dir=tmp_path / "shards",
        job_name="sampled",
    )  # fmt: skip
    job.federation.workflow_args = {"sites_per_round": 2}
    job.federation.aggregator_path = "resonfl.fl.dp_fedavg.DPFedAvg"
    job.federation.aggregator_args = {"noise_multiplier": Z, "delta": DELTA}
    job_id = submit(platform4, job.render(tmp_path / "job"))
    done = wait_job(platform4, job_id)
    assert done["status"] == "finished", done.get("error")

    for n, rnd in enumerate(done["rounds"]):
        asked = sorted(r["site"] for r in rnd["results"])
        assert len(asked) == 2 and set(asked) <= {"site-1", "site-2", "site-3", "site-4"}, asked
        assert all(r["status"] == "done" for r in rnd["results"])
        rdp = compute_rdp(q=0.5, noise_multiplier=Z, steps=n + 1, orders=list(ORDERS))
        by_hand = get_privacy_spent(orders=list(ORDERS), rdp=rdp, delta=DELTA)[0]
        assert rnd["metrics"]["dp_sample_rate"] == 0.5
        assert rnd["metrics"]["dp_epsilon"] == pytest.approx(by_hand, rel=1e-9)
