"""FedOpt (Reddi et al. 2021): one server-optimizer step on g = global - fedavg(updates).

Hand arithmetic uses b1=0.9, b2=0.99, tau=0.1 (so v starts at tau^2 = 0.01), server_lr=0.1.
"""

import math

import pytest
import torch

from resonfl.fl import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedYogi,
    ModelNotBoundError,
    StateMismatchError,
    dump_state,
    load_state,
)

ADAM_ARGS = {"server_lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 0.1}


def _bound(agg, *parameters: str):
    """The aggregator told which keys are parameters, as the platform does from the model."""
    agg.bind_model(parameters or ("w",))
    return agg


def _round(agg, global_w: float, client_w: float, round_num: int) -> float:
    """Both sites send client_w, so fedavg = client_w and g = global_w - client_w."""
    if agg.model_parameters is None:
        _bound(agg)
    agg.reset({"w": torch.tensor([global_w], dtype=torch.float64)}, round_num)
    agg.accept("a", {"w": torch.tensor([client_w], dtype=torch.float64)}, 1)
    agg.accept("b", {"w": torch.tensor([client_w], dtype=torch.float64)}, 3)
    return agg.aggregate()["w"].item()


def test_fedadam_one_step_by_hand() -> None:
    x1 = _round(FedAdam(ADAM_ARGS), 1.0, 0.5, 0)
    # g = 1.0 - 0.5 = 0.5 ; m = 0.1 * 0.5 = 0.05
    # v = 0.99 * 0.01 + 0.01 * 0.25 = 0.0124
    # x = 1.0 - 0.1 * 0.05 / (sqrt(0.0124) + 0.1)
    assert x1 == pytest.approx(1.0 - 0.1 * 0.05 / (math.sqrt(0.0124) + 0.1), abs=1e-12)


def test_fedadam_two_steps_carry_moments() -> None:
    agg = FedAdam(ADAM_ARGS)
    x1 = _round(agg, 1.0, 0.5, 0)
    x2 = _round(agg, x1, x1 - 0.25, 1)
    # g2 = 0.25 ; m2 = 0.9 * 0.05 + 0.1 * 0.25 = 0.07
    # v2 = 0.99 * 0.0124 + 0.01 * 0.0625 = 0.012901
    assert x2 == pytest.approx(x1 - 0.1 * 0.07 / (math.sqrt(0.012901) + 0.1), abs=1e-6)


def test_fedyogi_one_step_by_hand() -> None:
    x1 = _round(FedYogi(ADAM_ARGS), 1.0, 0.5, 0)
    # v = 0.01 - 0.01 * 0.25 * sign(0.01 - 0.25) = 0.0125 ; m = 0.05
    assert x1 == pytest.approx(1.0 - 0.1 * 0.05 / (math.sqrt(0.0125) + 0.1), abs=1e-12)


def test_fedyogi_second_moment_shrinks_additively_when_gradient_is_small() -> None:
    agg = FedYogi(ADAM_ARGS)
    x1 = _round(agg, 1.0, 0.5, 0)
    x2 = _round(agg, x1, x1 - 0.05, 1)
    # g2 = 0.05, g2^2 = 0.0025 < v1 = 0.0125
    # v2 = 0.0125 - 0.01 * 0.0025 = 0.012475 (Adam would give 0.99*0.0125 + 0.000025 = 0.0124)
    # m2 = 0.9 * 0.05 + 0.1 * 0.05 = 0.05
    assert x2 == pytest.approx(x1 - 0.1 * 0.05 / (math.sqrt(0.012475) + 0.1), abs=1e-6)
    assert agg.state_dict()["tensors"]["v.w"].item() == pytest.approx(0.012475, abs=1e-9)


def test_fedavgm_two_steps_by_hand() -> None:
    agg = FedAvgM({"server_lr": 1.0, "momentum": 0.9})
    x1 = _round(agg, 1.0, 0.5, 0)
    # g = 0.5 ; m = 0.5 ; x = 1.0 - 1.0 * 0.5 = 0.5
    assert x1 == pytest.approx(0.5)
    x2 = _round(agg, x1, 0.25, 1)
    # g = 0.25 ; m = 0.9 * 0.5 + 0.25 = 0.7 ; x = 0.5 - 0.7 = -0.2
    assert x2 == pytest.approx(-0.2)


def test_fedavgm_without_momentum_at_lr_one_is_fedavg() -> None:
    global_w = {"w": torch.tensor([1.0, -1.0])}
    updates = [("a", {"w": torch.tensor([2.0, 0.0])}, 1), ("b", {"w": torch.tensor([6.0, 4.0])}, 3)]
    outs = []
    for agg in (_bound(FedAvgM({"server_lr": 1.0, "momentum": 0.0})), FedAvg()):
        agg.reset(global_w, 0)
        for site, w, n in updates:
            agg.accept(site, w, n)
        outs.append(agg.aggregate()["w"])
    assert torch.allclose(outs[0], outs[1])


def _bn_global() -> dict[str, torch.Tensor]:
    return {
        "bn.weight": torch.tensor([1.0]),
        "bn.running_mean": torch.tensor([1.0]),
        "bn.running_var": torch.tensor([2.0]),
        "bn.num_batches_tracked": torch.tensor(4),
    }


def _bn_update(weight: float, mean: float, var: float, nbt: int) -> dict[str, torch.Tensor]:
    return {
        "bn.weight": torch.tensor([weight]),
        "bn.running_mean": torch.tensor([mean]),
        "bn.running_var": torch.tensor([var]),
        "bn.num_batches_tracked": torch.tensor(nbt),
    }


def test_batchnorm_buffers_are_averaged_not_stepped() -> None:
    agg = _bound(FedAdam(ADAM_ARGS), "bn.weight")
    agg.reset(_bn_global(), 0)
    agg.accept("a", _bn_update(0.5, 0.0, 1.0, 5), 1)
    agg.accept("b", _bn_update(0.5, 1.0, 2.0, 7), 1)
    out = agg.aggregate()
    # buffers: plain means (0+1)/2, (1+2)/2, (5+7)/2 ; int dtype kept
    assert out["bn.running_mean"].item() == 0.5
    assert out["bn.running_var"].item() == 1.5
    assert out["bn.num_batches_tracked"].item() == 6
    assert out["bn.num_batches_tracked"].dtype == torch.int64
    # the parameter is stepped by Adam (g = 0.5), not set to the mean 0.5
    expected = 1.0 - 0.1 * 0.05 / (math.sqrt(0.0124) + 0.1)
    assert out["bn.weight"].item() == pytest.approx(expected, abs=1e-6)
    assert set(agg.state_dict()["tensors"]) == {"m.bn.weight", "v.bn.weight"}


def test_buffer_suffixes_override_averages_a_parameter() -> None:
    agg = FedAvgM({"server_lr": 0.5, "momentum": 0.0, "buffer_suffixes": ["weight"]})
    _bound(agg, "layer.weight")
    agg.reset({"layer.weight": torch.tensor([1.0])}, 0)
    agg.accept("a", {"layer.weight": torch.tensor([0.0])}, 1)
    # averaged (0.0), not stepped (1.0 - 0.5 * 1.0 = 0.5)
    assert agg.aggregate()["layer.weight"].item() == 0.0


def test_state_dict_round_trip_resumes_identically() -> None:
    # Prepare: one aggregator runs rounds 0 and 1; another restarts from round 0's saved state
    def feed(agg, global_w, round_num, shift):
        agg.reset(global_w, round_num)
        agg.accept("a", {k: v + shift for k, v in global_w.items()}, 2)
        agg.accept("b", {k: v - 2 * shift for k, v in global_w.items()}, 1)
        return agg.aggregate()

    global0 = {"w": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([0.5])}
    original = _bound(FedYogi(ADAM_ARGS), "w", "b")
    global1 = feed(original, global0, 0, 0.3)
    saved = dump_state(original.state_dict())
    # Execute
    restarted = FedYogi(ADAM_ARGS)
    restarted.load_state_dict(load_state(saved))
    expected = feed(original, global1, 1, -0.2)
    resumed = feed(restarted, global1, 1, -0.2)
    # Assert
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)


def test_stepping_a_round_the_state_already_includes_raises() -> None:
    agg = FedAdam(ADAM_ARGS)
    _round(agg, 1.0, 0.5, 0)
    with pytest.raises(StateMismatchError, match="already includes round 0"):
        _round(agg, 1.0, 0.5, 0)


def test_state_from_another_algorithm_is_refused() -> None:
    adam = FedAdam(ADAM_ARGS)
    _round(adam, 1.0, 0.5, 0)
    with pytest.raises(StateMismatchError, match="FedAdam"):
        FedYogi(ADAM_ARGS).load_state_dict(adam.state_dict())


def test_output_dtype_follows_global() -> None:
    agg = _bound(FedAdam(ADAM_ARGS))
    agg.reset({"w": torch.tensor([1.0], dtype=torch.bfloat16)}, 0)
    agg.accept("a", {"w": torch.tensor([0.5], dtype=torch.bfloat16)}, 1)
    assert agg.aggregate()["w"].dtype == torch.bfloat16


class _Normalised(torch.nn.Module):
    """A model with a registered float buffer that is not BatchNorm's (a user's input mean)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.zeros(3))
        self.fc = torch.nn.Linear(3, 1)


def test_registered_float_buffer_is_averaged_not_stepped() -> None:
    # Prepare: the repro of issue 13 bug 1, with the model bound as the platform binds it
    model = _Normalised()
    global_w = {k: v.clone() for k, v in model.state_dict().items()}
    update = {**global_w, "input_mean": torch.full((3,), 700.0)}
    results = []
    for agg in (FedAdam(), FedYogi(), FedAdagrad(), FedAvgM(), FedAvg()):
        agg.bind_model(model)
        # Execute
        agg.reset(global_w, 0)
        agg.accept("s", update, 10)
        results.append(agg.aggregate()["input_mean"])
    # Assert: every algorithm averages the buffer to 700 (a stepped one moved 0.01)
    for out in results:
        assert torch.equal(out, torch.full((3,), 700.0))


def test_fedopt_without_a_bound_model_refuses_to_guess() -> None:
    with pytest.raises(ModelNotBoundError, match="bind_model"):
        FedAdam().reset({"input_mean": torch.zeros(3)}, 0)


def test_tied_parameters_are_stepped_under_every_name() -> None:
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(2, 2, bias=False)
            self.b = torch.nn.Linear(2, 2, bias=False)
            self.b.weight = self.a.weight

    model = Tied()
    agg = FedAvgM({"server_lr": 0.5, "momentum": 0.0})
    agg.bind_model(model)
    global_w = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert set(global_w) == {"a.weight", "b.weight"}
    agg.reset(global_w, 0)
    agg.accept("s", {k: torch.zeros(2, 2) for k in global_w}, 1)
    out = agg.aggregate()
    # both names stepped halfway to the mean (0), so the two copies stay equal
    assert torch.allclose(out["a.weight"], global_w["a.weight"] * 0.5)
    assert torch.equal(out["a.weight"], out["b.weight"])


def test_parameter_names_survive_a_state_round_trip() -> None:
    agg = _bound(FedAdam(ADAM_ARGS), "w")
    _round(agg, 1.0, 0.5, 0)
    restarted = FedAdam(ADAM_ARGS)
    restarted.load_state_dict(load_state(dump_state(agg.state_dict())))
    assert restarted.model_parameters == frozenset({"w"})


def test_fedadagrad_one_step_by_hand() -> None:
    x1 = _round(FedAdagrad({"server_lr": 0.1, "beta1": 0.9, "tau": 0.1}), 1.0, 0.5, 0)
    # g = 0.5 ; m = 0.05 ; v = 0.01 + 0.25 = 0.26
    assert x1 == pytest.approx(1.0 - 0.1 * 0.05 / (math.sqrt(0.26) + 0.1), abs=1e-12)


def test_fedadagrad_second_moment_only_grows() -> None:
    agg = FedAdagrad({"server_lr": 0.1, "beta1": 0.9, "tau": 0.1})
    x1 = _round(agg, 1.0, 0.5, 0)
    _round(agg, x1, x1 - 0.05, 1)
    # v2 = 0.26 + 0.0025 (Adam would shrink it: 0.99 * 0.26 + 0.01 * 0.0025)
    assert agg.state_dict()["tensors"]["v.w"].item() == pytest.approx(0.2625, abs=1e-9)
