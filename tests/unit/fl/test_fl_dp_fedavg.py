"""DP-FedAvg: clipped site updates, Gaussian noise on the sum, epsilon from the accountant."""

import math

import pytest
import torch
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from resonfl.fl.accountant import ORDERS, epsilon, noise_for_target
from resonfl.fl.dp_fedavg import DPFedAvg, PrivacyBudgetError
from resonfl.fl.rounds import SiteUpdate, fold_round

GLOBAL = {"w": torch.zeros(1000), "n": torch.tensor(5, dtype=torch.int64)}


def _update(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((1000,), value), "n": torch.tensor(9, dtype=torch.int64)}


def _fold(agg, values, round_num=0, needed=1):
    updates = [SiteUpdate(f"s{i}", 10, load=lambda v=v: _update(v)) for i, v in enumerate(values)]
    return fold_round(agg, dict(GLOBAL), round_num, updates, needed=needed)


def test_without_noise_it_is_the_mean_of_the_clipped_updates() -> None:
    # update norms: 0.01 * sqrt(1000) = 0.316 (kept) and 10 * sqrt(1000) = 316 (cut to 1)
    agg = DPFedAvg({"clip_norm": 1.0, "noise_multiplier": 0.0})
    out = _fold(agg, [0.01, 10.0]).weights
    expected = (0.01 + 1 / math.sqrt(1000)) / 2
    assert out["w"][0].item() == pytest.approx(expected, rel=1e-5)


def test_integer_buffers_keep_the_global_value() -> None:
    out = _fold(DPFedAvg({"noise_multiplier": 0.0}), [0.01, 0.02]).weights
    assert out["n"].item() == 5 and out["n"].dtype == torch.int64


def test_the_noise_has_std_z_times_s_over_n() -> None:
    agg = DPFedAvg({"clip_norm": 2.0, "noise_multiplier": 1.5})
    out = _fold(agg, [0.0, 0.0, 0.0, 0.0]).weights
    assert out["w"].std().item() == pytest.approx(1.5 * 2.0 / 4, rel=0.1)
    assert agg.round_metrics({})["dp_noise_std"] == pytest.approx(0.75)


def test_two_aggregations_draw_different_noise() -> None:
    a = _fold(DPFedAvg(), [0.0, 0.0]).weights["w"]
    b = _fold(DPFedAvg(), [0.0, 0.0]).weights["w"]
    assert not torch.equal(a, b)


def test_reported_epsilon_matches_opacus_rdp_by_hand() -> None:
    z, delta, rnd = 1.2, 1e-5, 4
    outcome = _fold(DPFedAvg({"noise_multiplier": z, "delta": delta}), [0.1, 0.2], round_num=rnd)
    rdp = compute_rdp(q=1.0, noise_multiplier=z, steps=rnd + 1, orders=list(ORDERS))
    by_hand, _ = get_privacy_spent(orders=list(ORDERS), rdp=rdp, delta=delta)
    assert outcome.metrics["dp_epsilon"] == pytest.approx(by_hand)
    assert outcome.metrics["dp_sample_rate"] == 1.0 and outcome.metrics["dp_delta"] == delta


def test_epsilon_grows_with_rounds() -> None:
    eps = [epsilon([(1.0, 1.0, r)], 1e-5) for r in (1, 5, 20)]
    assert eps == sorted(eps) and eps[0] > 0


def test_target_epsilon_stops_the_job_after_the_last_round_within_it() -> None:
    z = 1.0
    target = (epsilon([(z, 1.0, 3)], 1e-5) + epsilon([(z, 1.0, 4)], 1e-5)) / 2  # between r2, r3
    agg = DPFedAvg({"noise_multiplier": z, "target_epsilon": target})
    assert _fold(agg, [0.1], round_num=1).stopped is None
    stopped = _fold(agg, [0.1], round_num=2).stopped
    assert stopped is not None and "stopped after round 2" in stopped
    with pytest.raises(PrivacyBudgetError, match="target_epsilon"):
        _fold(agg, [0.1], round_num=3)


def test_noise_for_target_reaches_the_target() -> None:
    z = noise_for_target(3.0, 1e-5, 0.1, 200)
    assert epsilon([(z, 0.1, 200)], 1e-5) <= 3.0
    assert epsilon([(z * 0.97, 0.1, 200)], 1e-5) > 3.0


def test_sampled_sites_earn_amplification_and_the_rate_is_reported() -> None:
    """sites_per_round = k of N sites: the accountant counts q = k / N (a smaller epsilon than
    asking everyone), the round reports it, and Job.build_aggregator binds it."""
    z, delta, rnd, q = 1.0, 1e-5, 9, 0.25
    agg = DPFedAvg({"noise_multiplier": z, "delta": delta})
    agg.bind_sampling(q)
    outcome = _fold(agg, [0.1, 0.2], round_num=rnd)
    rdp = compute_rdp(q=q, noise_multiplier=z, steps=rnd + 1, orders=list(ORDERS))
    by_hand, _ = get_privacy_spent(orders=list(ORDERS), rdp=rdp, delta=delta)
    assert outcome.metrics["dp_epsilon"] == pytest.approx(by_hand)
    assert outcome.metrics["dp_sample_rate"] == q
    everyone = _fold(DPFedAvg({"noise_multiplier": z, "delta": delta}), [0.1], round_num=rnd)
    assert outcome.metrics["dp_epsilon"] < everyone.metrics["dp_epsilon"] / 2

    from resonfl.config import FederationConfig, ModelConfig
    from resonfl.job import Job

    job = Job(
        name="dp",
        model=ModelConfig(source="class Net:\n    pass\n"),
        federation=FederationConfig(
            num_rounds=2, sites=[f"s{i}" for i in range(8)],
            workflow_args={"sites_per_round": 2},
            aggregator_path="resonfl.fl.dp_fedavg.DPFedAvg",
        ),
    )  # fmt: skip
    assert job.build_aggregator().sample_rate == 0.25
