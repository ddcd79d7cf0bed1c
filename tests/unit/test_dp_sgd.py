"""DP-SGD on a site (the executor's private path with opacus) and its checks at submit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
from torch import nn
from torch.utils.data import TensorDataset

from resonfl.catalog import make_job
from resonfl.fl import accountant
from resonfl.fl.dp_sgd import DPSGDFedAvg
from resonfl.job import JobValidationError
from resonfl.templates import custom_client_executor as kit

DP = {"target_epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 1.0, "noise_multiplier": None}


def make_env(tmp: Path, rnd: int, dp: dict[str, Any], num_rounds: int = 3) -> kit.FLEnv:
    task = {
        "site": "s",
        "round": rnd,
        "num_rounds": num_rounds,
        "data_root": str(tmp),
        "state_dir": str(tmp / "state"),
        "out_dir": str(tmp),
        "task_args": {"dp_sgd": dp, "run_id": "run-1"},
    }
    args = {"lr": 0.05, "local_steps": 4, "batch_size": 8, "optimizer": "sgd"}
    return kit.FLEnv(task, args, device=torch.device("cpu"))


def data(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g))


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))


def test_the_executors_orders_are_the_accountants() -> None:
    assert kit.DP_ORDERS == accountant.ORDERS
    history = [(1.1, 0.125, 12)]
    assert kit.dp_epsilon(history, 1e-5) == accountant.epsilon(history, 1e-5)


def test_each_round_reports_epsilon_as_the_accountant_computes_it_by_hand(tmp_path: Path) -> None:
    dp = {**DP, "noise_multiplier": 1.3}
    spent = []
    for rnd in range(2):
        out = make_env(tmp_path, rnd, dp).fit(model(), data())
        spent.append(out["metrics"]["dp_epsilon"])
        q = out["metrics"]["dp_sample_rate"]
    assert q == pytest.approx(8 / 64)
    for rounds, eps in zip((1, 2), spent, strict=True):
        rdp = compute_rdp(q=q, noise_multiplier=1.3, steps=4 * rounds, orders=list(kit.DP_ORDERS))
        by_hand, _ = get_privacy_spent(orders=list(kit.DP_ORDERS), rdp=rdp, delta=1e-5)
        assert eps == pytest.approx(by_hand)
    saved = json.loads((tmp_path / "state" / kit.DP_STATE).read_text())
    assert saved == {"run_id": "run-1", "history": [[1.3, 0.125, 4], [1.3, 0.125, 4]]}


def test_calibrated_noise_spends_the_target_over_the_whole_run(tmp_path: Path) -> None:
    out = None
    for rnd in range(3):
        out = make_env(tmp_path, rnd, DP).fit(model(), data())
    assert out is not None
    assert 7.5 < out["metrics"]["dp_epsilon"] <= 8.0
    assert out["metrics"]["dp_epsilon_next"] > 8.0


def test_a_round_past_the_target_is_refused_before_training(tmp_path: Path) -> None:
    dp = {**DP, "target_epsilon": 1.0, "noise_multiplier": 0.8}
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(kit.PrivacyBudgetExhausted, match="target_epsilon 1"):
        make_env(tmp_path, 0, dp).fit(m, data())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert not (tmp_path / "state" / kit.DP_STATE).exists()


def test_the_update_differs_from_plain_sgd_noise_and_clipping_applied(tmp_path: Path) -> None:
    private = model()
    make_env(tmp_path / "a", 0, {**DP, "noise_multiplier": 1.0}).fit(private, data())
    assert not hasattr(next(private.parameters()), "grad_sample")  # opacus hooks removed
    plain = model()
    env = make_env(tmp_path / "b", 0, {})
    env.task_args = {}
    env.fit(plain, data())
    assert not torch.allclose(private[0].weight, plain[0].weight)


def test_batchnorm_is_named_with_its_fix_before_a_site_trains(tmp_path: Path) -> None:
    m = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    with pytest.raises(kit.DPModelError, match=r"1 \(BatchNorm1d\).*GroupNorm"):
        make_env(tmp_path, 0, DP).fit(m, data())


def test_a_batchnorm_model_def_is_refused_at_submit() -> None:
    job = make_job("digits", 2, num_rounds=2)
    source = job.model.source.replace("nn.ReLU(),", "nn.BatchNorm2d(width), nn.ReLU(),", 1)
    job = job.model_copy(update={"model": job.model.model_copy(update={"source": source})})
    job.federation.aggregator_path = "resonfl.fl.dp_sgd.DPSGDFedAvg"
    with pytest.raises(JobValidationError, match="BatchNorm2d.*GroupNorm"):
        job.validate()


def test_amp_is_refused_with_dp_sgd_at_submit() -> None:
    job = make_job("digits", 2, num_rounds=2, amp=True)
    job.federation.aggregator_path = "resonfl.fl.dp_sgd.DPSGDFedAvg"
    with pytest.raises(JobValidationError, match="amp"):
        job.validate()


def test_the_server_reports_the_worst_site_and_stops_before_the_target() -> None:
    agg = DPSGDFedAvg({"target_epsilon": 3.0})
    sites = {
        "a": {"dp_epsilon": 1.0, "dp_epsilon_next": 2.0},
        "b": {"dp_epsilon": 2.5, "dp_epsilon_next": 3.4},
    }
    assert agg.round_metrics(sites)["dp_epsilon"] == 2.5
    agg.reset({"w": torch.zeros(1)}, 4)
    reason = agg.stop_reason(sites)
    assert reason is not None and "b to epsilon 3.4" in reason and "after round 4" in reason
    assert agg.stop_reason({"a": sites["a"]}) is None
    assert DPSGDFedAvg.client_task_args(agg.args)["dp_sgd"]["target_epsilon"] == 3.0


def test_calibrated_noise_is_computed_once_a_run_and_kept_in_the_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    search = kit.dp_noise_for_target
    monkeypatch.setattr(
        kit, "dp_noise_for_target", lambda *args: calls.append(args) or search(*args)
    )
    noise = [make_env(tmp_path, rnd, DP).fit(model(), data()) for rnd in range(3)]
    assert len(calls) == 1
    assert len({out["metrics"]["dp_noise_multiplier"] for out in noise}) == 1
    saved = json.loads((tmp_path / "state" / kit.DP_STATE).read_text())
    assert saved["calibration"]["noise_multiplier"] == noise[0]["metrics"]["dp_noise_multiplier"]


def test_rounds_with_the_same_noise_are_accounted_as_one_run_of_steps() -> None:
    assert kit.dp_epsilon([(1.1, 0.25, 4)] * 5 + [(2.0, 0.5, 3)], 1e-5) == pytest.approx(
        accountant.epsilon([(1.1, 0.25, 20), (2.0, 0.5, 3)], 1e-5)
    )
