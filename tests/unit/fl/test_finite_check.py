"""The finite check on updates: one float64 reduction, exact for every float dtype."""

from __future__ import annotations

import pytest
import torch

from resonfl.fl.base import NonFiniteUpdateError, check_finite


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_one_non_finite_value_anywhere_is_found(dtype: torch.dtype, bad: float) -> None:
    t = torch.zeros(1000, dtype=dtype)
    t[777] = bad
    with pytest.raises(NonFiniteUpdateError, match="w"):
        check_finite({"ok": torch.ones(3), "w": t}, "site-1")


def test_large_finite_values_are_not_mistaken_for_overflow() -> None:
    huge32 = torch.full((10_000,), torch.finfo(torch.float32).max, dtype=torch.float32)
    huge64 = torch.full((4,), torch.finfo(torch.float64).max, dtype=torch.float64)  # sum: inf
    check_finite({"a": huge32, "b": huge64, "steps": torch.tensor(3)}, "site-1")
