"""Robust aggregators: median, trimmed mean, Krum / Multi-Krum, norm clipping.

Five sites; four honest ones near 1.0 and one bad one far away (scaled or sign-flipped).
"""

import pytest
import torch

from resonfl.fl.buffered import TooFewSitesError
from resonfl.fl.clipping import NormClip, update_norm
from resonfl.fl.fedavg import FedAvg
from resonfl.fl.krum import Krum, MultiKrum
from resonfl.fl.median import CoordinateMedian, TrimmedMean, coordinate_median
from resonfl.fl.rounds import SiteUpdate, fold_round

HONEST = [0.9, 1.0, 1.1, 1.0]
GLOBAL = {"w": torch.zeros(3), "n": torch.tensor(2, dtype=torch.int64)}


def _update(value: float, n: int = 2) -> dict[str, torch.Tensor]:
    return {"w": torch.full((3,), value), "n": torch.tensor(n, dtype=torch.int64)}


def _run(agg, values, samples=None):
    agg.reset(dict(GLOBAL), 0)
    for i, v in enumerate(values):
        agg.accept(f"s{i}", _update(v), (samples or [10] * len(values))[i])
    return agg.aggregate()


def test_fedavg_is_pulled_far_by_one_scaled_site() -> None:
    out = _run(FedAvg(), [*HONEST, -100.0])
    assert out["w"][0].item() < -15


@pytest.mark.parametrize(
    "agg",
    [CoordinateMedian(), TrimmedMean(), Krum(), MultiKrum()],
    ids=["median", "trimmed", "krum", "multikrum"],
)
@pytest.mark.parametrize("bad", [-100.0, 1e6])
def test_robust_rules_stay_within_the_honest_range(agg, bad: float) -> None:
    out = _run(agg, [*HONEST, bad])
    assert 0.9 <= out["w"][0].item() <= 1.1
    assert out["n"].dtype == torch.int64 and out["n"].item() == 2


def test_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    assert coordinate_median(torch.tensor([[1.0], [2.0], [3.0], [10.0]])).item() == 2.5


def test_trimmed_mean_by_hand() -> None:
    # sorted -100, 0.9, 1.0, 1.0, 1.1: drop -100 and 1.1, mean of 0.9, 1.0, 1.0
    out = _run(TrimmedMean({"max_bad_sites": 1}), [*HONEST, -100.0])
    assert out["w"][0].item() == pytest.approx(2.9 / 3)


def test_robust_rules_ignore_a_claimed_sample_count() -> None:
    out = _run(CoordinateMedian(), [*HONEST, -100.0], samples=[1, 1, 1, 1, 10**9])
    assert 0.9 <= out["w"][0].item() <= 1.1


def test_krum_picks_one_honest_update_and_multikrum_averages_n_minus_f() -> None:
    krum, multi = Krum(), MultiKrum()
    picked = _run(krum, [*HONEST, 50.0])["w"][0].item()
    assert any(picked == pytest.approx(h) for h in HONEST)
    assert len(krum.selected) == 1 and "s4" not in krum.selected
    assert _run(multi, [*HONEST, 50.0])["w"][0].item() == pytest.approx(1.0)
    assert sorted(multi.selected) == ["s0", "s1", "s2", "s3"]
    assert multi.round_metrics({}) == {"krum_kept_sites": 4.0}


def test_krum_needs_2f_plus_3_updates() -> None:
    with pytest.raises(TooFewSitesError, match="2f \\+ 3"):
        _run(Krum({"max_bad_sites": 1}), HONEST)


def test_too_few_sites_for_f_is_refused_at_validation() -> None:
    with pytest.raises(ValueError, match="needs at least 5 sites"):
        Krum.Args(max_bad_sites=1).check_sites(["a", "b", "c", "d"])
    CoordinateMedian.Args(max_bad_sites=1).check_sites(["a", "b", "c"])


def test_norm_clip_bounds_a_bad_sites_pull() -> None:
    # honest deltas have norm ~1.7 (3 coords of ~1): clip to 2 leaves them; the bad one is cut to 2
    out = _run(NormClip({"max_norm": 2.0}), [*HONEST, -100.0])
    bad_pull = -2.0 / 3**0.5  # per coordinate after clipping
    assert out["w"][0].item() == pytest.approx((sum(HONEST) + bad_pull) / 5)


def test_norm_clip_with_a_large_bound_equals_fedavg() -> None:
    values = [0.5, 1.0, 2.0]
    clip = _run(NormClip({"max_norm": 1e9, "weighting": "samples"}), values, [1, 2, 3])
    avg = _run(FedAvg(), values, [1, 2, 3])
    assert torch.allclose(clip["w"], avg["w"])


def test_norm_clip_reports_norms_and_how_many_were_clipped() -> None:
    agg = NormClip({"max_norm": 2.0})
    _run(agg, [*HONEST, -100.0])
    metrics = agg.round_metrics({})
    assert metrics["clipped_sites"] == 1.0
    assert metrics["update_norm_median"] == pytest.approx(update_norm(GLOBAL, _update(1.0)))


def test_fold_round_adds_the_aggregators_round_metrics() -> None:
    updates = [
        SiteUpdate(f"s{i}", 10, {"loss": 1.0}, load=lambda v=v: _update(v))
        for i, v in enumerate([*HONEST, -100.0])
    ]
    outcome = fold_round(NormClip({"max_norm": 2.0}), dict(GLOBAL), 0, updates, needed=5)
    assert outcome.metrics["clipped_sites"] == 1.0 and outcome.metrics["loss"] == 1.0
    assert outcome.stopped is None


def test_buffered_rules_free_the_updates_once_aggregated() -> None:
    agg = CoordinateMedian()
    _run(agg, HONEST)
    assert agg._updates == []
    assert agg.aggregate()["w"][0].item() == pytest.approx(1.0)  # again: same result
