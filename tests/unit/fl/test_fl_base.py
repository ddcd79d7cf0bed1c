"""Shared contract: typed args, class resolution, metrics, state serialisation."""

import sys

import pytest
import torch
from pydantic import ValidationError

from resonfl.fl import (
    Aggregator,
    ComponentError,
    FedAvg,
    FedProx,
    FedProxArgs,
    ScatterAndGather,
    dump_state,
    load_state,
    resolve_class,
    weighted_metrics,
)


def test_dict_args_are_validated_into_args() -> None:
    assert FedProx({"mu": 0.5}).args == FedProxArgs(mu=0.5)


def test_bad_args_raise_validation_error_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="mu"):
        FedProx({"mu": -1})
    with pytest.raises(ValidationError, match="mue"):
        FedProx({"mue": 0.1})


def test_args_of_another_model_are_refused() -> None:
    with pytest.raises(TypeError, match="FedProxArgs"):
        FedAvg(FedProxArgs())


def test_resolve_class_returns_the_class() -> None:
    assert resolve_class("resonfl.fl.fedavg.FedAvg", Aggregator) is FedAvg
    assert resolve_class("resonfl.fl.fedavg:FedAvg", Aggregator) is FedAvg


def test_resolve_class_module_not_found() -> None:
    with pytest.raises(ComponentError, match="module 'resonfl.fl.nope' not found"):
        resolve_class("resonfl.fl.nope.FedAvg", Aggregator)


def test_resolve_class_attribute_missing() -> None:
    with pytest.raises(ComponentError, match="has no attribute 'FedAvgg'"):
        resolve_class("resonfl.fl.fedavg.FedAvgg", Aggregator)


def test_resolve_class_not_a_subclass() -> None:
    with pytest.raises(ComponentError, match="not a subclass of resonfl.fl.base.Aggregator"):
        resolve_class("resonfl.fl.workflows.ScatterAndGather", Aggregator)


def test_resolve_class_not_a_class() -> None:
    with pytest.raises(ComponentError, match="not a class"):
        resolve_class("resonfl.fl.fedavg.fedavg", Aggregator)


def test_resolve_class_reports_a_module_that_fails_to_import(tmp_path, monkeypatch) -> None:
    (tmp_path / "resonfl_broken_mod.py").write_text("import resonfl_missing_dep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "resonfl_broken_mod", raising=False)
    with pytest.raises(ComponentError, match="importing 'resonfl_broken_mod' failed.*missing_dep"):
        resolve_class("resonfl_broken_mod.Agg", Aggregator)


def test_resolve_class_workflow() -> None:
    from resonfl.fl import Workflow

    assert resolve_class("resonfl.fl.workflows.ScatterAndGather", Workflow) is ScatterAndGather


def test_weighted_metrics_by_hand() -> None:
    results = [({"acc": 0.5, "loss": 1.0}, 1), ({"acc": 1.0}, 3)]
    # acc: (1*0.5 + 3*1.0) / 4 = 0.875 ; loss only at the first site: 1.0
    assert weighted_metrics(results) == {"acc": 0.875, "loss": 1.0}


def test_weighted_metrics_rejects_non_positive_samples() -> None:
    with pytest.raises(ValueError, match="num_samples"):
        weighted_metrics([({"acc": 1.0}, 0)])


def test_state_bytes_round_trip() -> None:
    state = {"tensors": {"m.w": torch.tensor([1.0, 2.0])}, "meta": {"algorithm": "X", "r": 3}}
    back = load_state(dump_state(state))
    assert torch.equal(back["tensors"]["m.w"], state["tensors"]["m.w"])
    assert back["meta"]["algorithm"] == "X" and back["meta"]["r"] == 3


def test_stateless_aggregator_state_round_trips() -> None:
    agg = FedAvg()
    agg.load_state_dict(load_state(dump_state(agg.state_dict())))
    assert agg.client_args() == {}
