"""Secure aggregation (SecAgg+): the unmasked sum equals FedAvg within quantization error,
each masked upload looks like noise, and a site that drops after sharing its keys is
recovered through the secret shares."""

import numpy as np
import pytest
import torch

from resonfl.fl.fedavg import FedAvg
from resonfl.fl.rounds import SiteUpdate, fold_round
from resonfl.fl.secagg import (
    Params,
    SecAggArgs,
    SecAggError,
    SecAggFedAvg,
    SecureRound,
    encode,
    join_secret,
    prg,
    split_secret,
)

SITES = ["s1", "s2", "s3", "s4", "s5"]
GLOBAL = {"w": torch.zeros(64, 8), "b": torch.zeros(8), "n": torch.tensor(3)}


def _updates(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {
        s: {"w": torch.randn(64, 8, generator=g) * 0.1, "b": torch.randn(8, generator=g) * 0.1,
            "n": torch.tensor(7)}
        for s in SITES
    }  # fmt: skip


SAMPLES = {"s1": 10, "s2": 20, "s3": 30, "s4": 40, "s5": 50}


def _fold(agg, updates, sites=SITES):
    agg.expect_sites(SITES)
    return fold_round(
        agg,
        dict(GLOBAL),
        0,
        [SiteUpdate(s, SAMPLES[s], load=lambda s=s: updates[s]) for s in sites],
        needed=1,
    )


def test_secure_sum_equals_fedavg_within_quantization_error() -> None:
    args = SecAggArgs(clip_range=1.0, quantization_bits=24)
    updates = _updates()
    secure = _fold(SecAggFedAvg(args), updates).weights
    plain = _fold(FedAvg(), updates).weights
    step = 2 * args.clip_range / (2**args.quantization_bits - 1)
    assert (secure["w"] - plain["w"]).abs().max().item() <= step / 2 + 1e-7
    assert secure["n"].item() == 3, "integer buffers keep the global's value"


def test_a_masked_upload_looks_like_uniform_noise() -> None:
    args = SecAggArgs()
    updates = _updates()
    secure = SecureRound.open(0, SITES, 64 * 8 + 8 + 1, args)
    for s in SITES:
        secure.submit(s, encode(GLOBAL, updates[s], SAMPLES[s], args))
    stored = secure.server.masked["s1"]
    plain = encode(GLOBAL, updates["s1"], SAMPLES["s1"], args)
    assert not np.array_equal(stored, plain)
    # each byte of the stored vector uniform on 0..255 (chi-square, 255 dof: 99.9 % under 340)
    counts = np.bincount(stored.view(np.uint8), minlength=256)
    expected = stored.size * 8 / 256
    assert ((counts - expected) ** 2 / expected).sum() < 340
    # the top bits spread over the whole ring, unlike the plaintext's (< 2^30 here)
    assert (stored >> np.uint64(62)).tolist().count(0) < stored.size * 0.4
    corr = np.corrcoef(stored.astype(np.float64), plain.astype(np.float64))[0, 1]
    assert abs(corr) < 0.2


def test_a_site_dropping_after_sharing_keys_is_recovered_from_the_shares() -> None:
    updates = _updates(1)
    agg = SecAggFedAvg()
    survivors = [s for s in SITES if s != "s3"]
    secure = _fold(agg, updates, sites=survivors).weights
    plain = _fold(FedAvg(), updates, sites=survivors).weights
    assert agg.dropped == ["s3"]
    assert torch.allclose(secure["w"], plain["w"], atol=1e-6)
    assert agg.round_metrics({})["secagg_dropped_sites"] == 1.0


def test_secagg_plus_with_a_neighbour_graph_still_sums_exactly() -> None:
    args = SecAggArgs(neighbours=2)
    updates = _updates(2)
    agg = SecAggFedAvg(args)
    secure = _fold(agg, updates).weights
    plain = _fold(FedAvg(), updates).weights
    assert all(len(agg._secure_round.params.neighbours(s)) == 2 for s in SITES)
    assert torch.allclose(secure["w"], plain["w"], atol=1e-6)


def test_too_many_dropouts_cannot_be_unmasked() -> None:
    with pytest.raises(SecAggError, match="shares"):
        _fold(SecAggFedAvg(), _updates(), sites=["s1", "s2"])


def test_a_site_never_reveals_both_shares_of_a_peer() -> None:
    params = Params(0, tuple(SITES), 4, SecAggArgs())
    secure = SecureRound.open(0, SITES, 4, SecAggArgs())
    client = secure.clients["s1"]
    client.masked_update(np.zeros(4, dtype=np.uint64), secure.server.inbox("s1"))
    with pytest.raises(SecAggError, match="both"):
        client.unmask_shares(["s1", "s2"], ["s2"])
    client.unmask_shares(SITES, [])
    with pytest.raises(SecAggError, match="already answered"):
        client.unmask_shares(SITES, [])  # a second request could ask for the other share
    assert params.threshold("s1") == 3


def test_shamir_rebuilds_from_any_threshold_shares_and_not_fewer() -> None:
    secret = bytes(range(32))
    shares = split_secret(secret, [1, 2, 3, 4, 5], 3)
    assert join_secret({x: shares[x] for x in (2, 4, 5)}, 3) == secret
    with pytest.raises(SecAggError):
        join_secret({1: shares[1], 2: shares[2]}, 3)


def test_masks_are_deterministic_in_their_seed() -> None:
    assert np.array_equal(prg(b"k" * 32, 10), prg(b"k" * 32, 10))
    assert not np.array_equal(prg(b"k" * 32, 10), prg(b"j" * 32, 10))


def test_too_few_sites_or_a_ring_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 3 sites"):
        SecAggArgs().check_sites(["a", "b"])
    with pytest.raises(ValueError, match="> 64"):
        SecAggArgs(quantization_bits=32, max_samples=2**24).check_sites(["a"] * 300)
