"""FedAvg: samples-weighted mean, streaming, dtype-preserving, strict about bad updates."""

import pytest
import torch

from resonfl.fl import (
    DuplicateUpdateError,
    FedAvg,
    NonFiniteUpdateError,
    NoUpdatesError,
    RoundClosedError,
    RoundNotStartedError,
    WeightsMismatchError,
)
from resonfl.fl.fedavg import fedavg


def _global() -> dict[str, torch.Tensor]:
    return {"w": torch.zeros(2), "bn.num_batches_tracked": torch.tensor(0)}


def _update(w: list[float], nbt: int) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(w), "bn.num_batches_tracked": torch.tensor(nbt)}


def test_weights_by_samples() -> None:
    # Prepare
    agg = FedAvg()
    agg.reset(_global(), 0)
    # Execute
    agg.accept("a", _update([1.0, 2.0], 0), 1)
    agg.accept("b", _update([4.0, 8.0], 0), 3)
    out = agg.aggregate()
    # Assert: (1*1 + 3*4) / 4 = 3.25 ; (1*2 + 3*8) / 4 = 6.5
    assert torch.equal(out["w"], torch.tensor([3.25, 6.5]))


def test_order_of_accept_does_not_matter() -> None:
    updates = [
        ("a", _update([1.0, 2.0], 1), 1),
        ("b", _update([4.0, 8.0], 2), 3),
        ("c", _update([0.5, -1.0], 3), 4),
    ]
    results = []
    for order in (updates, updates[::-1]):
        agg = FedAvg()
        agg.reset(_global(), 0)
        for site, w, n in order:
            agg.accept(site, w, n)
        results.append(agg.aggregate())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


def test_int_buffer_stays_int_and_is_rounded_weighted_mean() -> None:
    agg = FedAvg()
    agg.reset(_global(), 0)
    agg.accept("a", _update([0.0, 0.0], 10), 1)
    agg.accept("b", _update([0.0, 0.0], 13), 3)
    out = agg.aggregate()
    # (1*10 + 3*13) / 4 = 49 / 4 = 12.25 -> 12
    assert out["bn.num_batches_tracked"].dtype == torch.int64
    assert out["bn.num_batches_tracked"].item() == 12


def test_int_buffer_ties_round_half_to_even() -> None:
    agg = FedAvg()
    agg.reset(_global(), 0)
    agg.accept("a", _update([0.0, 0.0], 10), 1)
    agg.accept("b", _update([0.0, 0.0], 11), 1)
    # (10 + 11) / 2 = 10.5 -> 10 (half to even)
    assert agg.aggregate()["bn.num_batches_tracked"].item() == 10


def test_output_dtypes_equal_global_dtypes() -> None:
    global_weights = {"h": torch.zeros(2, dtype=torch.float16), "b": torch.tensor([False, True])}
    agg = FedAvg()
    agg.reset(global_weights, 0)
    agg.accept("a", {"h": torch.ones(2, dtype=torch.float16), "b": torch.tensor([True, True])}, 3)
    agg.accept("b", {"h": torch.zeros(2, dtype=torch.float16), "b": torch.tensor([False, True])}, 1)
    out = agg.aggregate()
    # h: 3/4 = 0.75 ; b: [3/4 -> True, 1 -> True]
    assert out["h"].dtype == torch.float16 and torch.equal(out["h"], torch.full((2,), 0.75).half())
    assert out["b"].dtype == torch.bool and out["b"].tolist() == [True, True]


def test_duplicate_site_raises_and_changes_nothing() -> None:
    agg = FedAvg()
    agg.reset(_global(), 0)
    agg.accept("a", _update([1.0, 1.0], 0), 1)
    with pytest.raises(DuplicateUpdateError, match="'a'"):
        agg.accept("a", _update([9.0, 9.0], 0), 1)
    assert torch.equal(agg.aggregate()["w"], torch.tensor([1.0, 1.0]))


def test_shape_mismatch_raises() -> None:
    agg = FedAvg()
    agg.reset(_global(), 0)
    with pytest.raises(WeightsMismatchError, match="w: \\(3,\\) != \\(2,\\)"):
        agg.accept("a", {"w": torch.zeros(3), "bn.num_batches_tracked": torch.tensor(0)}, 1)


def test_missing_and_unexpected_keys_raise() -> None:
    agg = FedAvg()
    agg.reset(_global(), 0)
    with pytest.raises(WeightsMismatchError, match="missing keys.*unexpected keys"):
        agg.accept("a", {"w": torch.zeros(2), "extra": torch.zeros(1)}, 1)


@pytest.mark.parametrize("n", [0, -5])
def test_non_positive_num_samples_raises_value_error(n: int) -> None:
    agg = FedAvg()
    agg.reset(_global(), 0)
    with pytest.raises(ValueError, match="num_samples"):
        agg.accept("a", _update([1.0, 1.0], 0), n)


def test_nan_update_is_refused() -> None:
    agg = FedAvg()
    agg.reset(_global(), 0)
    with pytest.raises(NonFiniteUpdateError):
        agg.accept("a", _update([float("nan"), 1.0], 0), 1)


def test_aggregate_without_updates_raises() -> None:
    agg = FedAvg()
    agg.reset(_global(), 0)
    with pytest.raises(NoUpdatesError):
        agg.aggregate()


def test_accept_before_reset_raises() -> None:
    with pytest.raises(RoundNotStartedError):
        FedAvg().accept("a", _update([1.0, 1.0], 0), 1)


def test_aggregate_is_repeatable_and_closes_the_round() -> None:
    agg = FedAvg()
    agg.reset(_global(), 0)
    agg.accept("a", _update([1.0, 2.0], 0), 1)
    first = agg.aggregate()
    with pytest.raises(RoundClosedError):
        agg.accept("b", _update([5.0, 5.0], 0), 1)
    assert torch.equal(agg.aggregate()["w"], first["w"])


def test_reset_starts_a_fresh_round() -> None:
    agg = FedAvg()
    agg.reset(_global(), 0)
    agg.accept("a", _update([1.0, 2.0], 0), 1)
    agg.aggregate()
    agg.reset(_global(), 1)
    agg.accept("a", _update([3.0, 4.0], 0), 1)
    assert torch.equal(agg.aggregate()["w"], torch.tensor([3.0, 4.0]))


def test_accumulator_does_not_alias_caller_tensors() -> None:
    w = torch.tensor([1.0, 2.0], dtype=torch.float64)
    agg = FedAvg()
    agg.reset({"w": torch.zeros(2, dtype=torch.float64)}, 0)
    agg.accept("a", {"w": w}, 2)
    agg.accept("b", {"w": torch.zeros(2, dtype=torch.float64)}, 2)
    assert torch.equal(w, torch.tensor([1.0, 2.0], dtype=torch.float64))
    assert torch.equal(agg.aggregate()["w"], torch.tensor([0.5, 1.0], dtype=torch.float64))


def test_pure_fedavg_function() -> None:
    out = fedavg([({"w": torch.tensor([2.0])}, 1), ({"w": torch.tensor([6.0])}, 3)])
    # (1*2 + 3*6) / 4 = 5
    assert torch.equal(out["w"], torch.tensor([5.0]))


def test_pure_fedavg_rejects_empty_input() -> None:
    with pytest.raises(NoUpdatesError):
        fedavg([])
