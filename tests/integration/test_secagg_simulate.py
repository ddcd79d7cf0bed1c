"""SecAgg+ through the local simulator (a sandboxed process per site): the global model equals
plain FedAvg's within quantization error, and a site failing mid-round after the keys were
agreed is recovered from the secret shares (the round completes with the others)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resonfl.config import FederationConfig, ModelConfig
from resonfl.job import Job
from resonfl.simulate import simulate
from resonfl.templates.custom_persistor import load_state_dict_file

pytestmark = pytest.mark.integration

FAIL_ON_SITE_3_IN_ROUND_1 = '''
import os
_train = fl_train_model


def fl_train_model(model, env, out_dir, logger):
    if env.site_name == "site-3" and env.current_round == 1:
        raise RuntimeError("site-3 lost power")
    return _train(model, env, out_dir, logger)
'''


def run(tmp: Path, name: str, source: str, aggregator: str) -> dict[str, torch.Tensor]:
    sites = ["site-1", "site-2", "site-3", "site-4"]  # 4: t = 2 of 3 neighbours survive a dropout
    for site in sites:
        (tmp / "data" / site).mkdir(parents=True, exist_ok=True)
    job = Job(
        name=name,
        model=ModelConfig(source=source),
        federation=FederationConfig(
            num_rounds=2, sites=sites, min_clients=3, aggregator_path=aggregator
        ),
        shards={s: tmp / "data" / s for s in sites},
    )
    result = simulate(job.render(tmp / name), tmp / f"ws_{name}", progress=False)
    if aggregator.endswith("SecAggFedAvg"):
        assert "site-3 lost power" in result.rounds[1].failed["site-3"]
        assert result.rounds[1].metrics["secagg_dropped_sites"] == 1.0
    return load_state_dict_file(result.checkpoint)


def test_secagg_with_a_dropout_equals_fedavg_within_quantization_error(
    tmp_path: Path, tiny_model_def: str
) -> None:
    source = tiny_model_def + FAIL_ON_SITE_3_IN_ROUND_1
    secure = run(tmp_path, "secagg", source, "resonfl.fl.secagg.SecAggFedAvg")
    plain = run(tmp_path, "fedavg", source, "resonfl.fl.fedavg.FedAvg")
    step = 2 * 1.0 / (2**24 - 1)  # clip_range 1, 24 bits: one quantization step
    for key, value in plain.items():
        if value.is_floating_point():
            assert (secure[key] - value).abs().max().item() <= 2 * step, key
