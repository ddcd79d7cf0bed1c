"""HierarchicalFedAvg: FedAvg inside each group, then across groups.

Group A = s1 (w=1, n=1) + s2 (w=3, n=3): mean (1*1 + 3*3) / 4 = 2.5, N_A = 4.
Group B = s3 (w=10, n=1): mean 10, N_B = 1.
"""

import pytest
import torch
from pydantic import ValidationError

from resonfl.fl import FedAvg, HierarchicalFedAvg, UnknownSiteError

GROUPS = {"A": ["s1", "s2"], "B": ["s3"]}
UPDATES = [("s1", 1.0, 1), ("s2", 3.0, 3), ("s3", 10.0, 1)]


def _run(agg, updates=UPDATES) -> float:
    agg.reset({"w": torch.zeros(1)}, 0)
    for site, w, n in updates:
        agg.accept(site, {"w": torch.tensor([w])}, n)
    return agg.aggregate()["w"].item()


def test_samples_weighting_by_hand() -> None:
    # (4 * 2.5 + 1 * 10) / 5 = 4.0
    assert _run(HierarchicalFedAvg({"groups": GROUPS})) == pytest.approx(4.0)


def test_samples_weighting_equals_flat_fedavg() -> None:
    assert _run(HierarchicalFedAvg({"groups": GROUPS})) == pytest.approx(_run(FedAvg()))


def test_equal_weighting_by_hand() -> None:
    # (2.5 + 10) / 2 = 6.25
    agg = HierarchicalFedAvg({"groups": GROUPS, "group_weighting": "equal"})
    assert _run(agg) == pytest.approx(6.25)


def test_groups_without_updates_are_left_out() -> None:
    agg = HierarchicalFedAvg({"groups": GROUPS, "group_weighting": "equal"})
    assert _run(agg, UPDATES[:2]) == pytest.approx(2.5)


def test_site_in_no_group_raises_at_accept() -> None:
    agg = HierarchicalFedAvg({"groups": GROUPS})
    agg.reset({"w": torch.zeros(1)}, 0)
    with pytest.raises(UnknownSiteError, match="'s9'"):
        agg.accept("s9", {"w": torch.ones(1)}, 1)


def test_site_in_two_groups_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="'s1' is in both"):
        HierarchicalFedAvg({"groups": {"A": ["s1"], "B": ["s1"]}})


def test_unknown_weighting_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="group_weighting"):
        HierarchicalFedAvg({"groups": GROUPS, "group_weighting": "median"})
