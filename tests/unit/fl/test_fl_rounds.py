"""The one round loop (`resonfl.fl.rounds.fold_round`): fold, refuse, persist, save and restore."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resonfl.fl import FedAdam as _FedAdam
from resonfl.fl import FedAvg
from resonfl.fl.rounds import AggregatorStateStore, RoundTooSmallError, SiteUpdate, fold_round
from resonfl.fl.shareable import load_weights, save_weights, sha256_file
from resonfl.templates.custom_persistor import PTFileModelPersistor


def FedAdam() -> _FedAdam:  # noqa: N802 - reads like the class it builds
    """A FedAdam bound to the one-tensor model of these tests ("w" is a parameter)."""
    aggregator = _FedAdam()
    aggregator.bind_model(["w"])
    return aggregator


def _update(
    site: str, value: float, samples: int, metrics: dict[str, float] | None = None, size: int = 2
) -> SiteUpdate:
    return SiteUpdate(
        site=site,
        samples=samples,
        metrics=metrics or {},
        load=lambda: {"w": torch.full((size,), value)},
    )


def test_folds_updates_weighted_by_samples_and_averages_metrics() -> None:
    outcome = fold_round(
        FedAvg(),
        {"w": torch.zeros(2)},
        0,
        [_update("a", 1.0, 1, {"top1": 0.5}), _update("b", 4.0, 3, {"top1": 0.9})],
        needed=2,
    )
    assert torch.allclose(outcome.weights["w"], torch.full((2,), 3.25))
    assert outcome.accepted == ["a", "b"]
    assert outcome.metrics["top1"] == pytest.approx(0.8)
    assert outcome.samples == {"a": 1, "b": 3}


def test_loads_each_update_only_when_it_is_folded() -> None:
    loaded: list[str] = []

    def updates():
        for site in ("a", "b", "c"):
            yield SiteUpdate(site=site, samples=1, load=lambda s=site: loaded.append(s) or {"w": torch.ones(2)})
            assert loaded[-1] == site  # folded before the next one is produced

    fold_round(FedAvg(), {"w": torch.zeros(2)}, 0, updates(), needed=3)
    assert loaded == ["a", "b", "c"]


def test_a_broken_or_failed_update_is_refused_and_the_round_goes_on() -> None:
    def broken():
        raise OSError("truncated file")

    outcome = fold_round(
        FedAvg(),
        {"w": torch.zeros(2)},
        0,
        [
            _update("a", 2.0, 1),
            SiteUpdate(site="b", samples=1, load=broken),
            SiteUpdate(site="c", samples=1, load=lambda: {"w": torch.tensor([float("nan"), 0.0])}),
            SiteUpdate.failed("d", "sandbox: killed"),
        ],
        needed=1,
    )
    assert outcome.accepted == ["a"]
    assert set(outcome.refused) == {"b", "c", "d"}
    assert "truncated file" in outcome.refused["b"] and "NaN" in outcome.refused["c"]
    assert outcome.refused["d"] == "sandbox: killed"


def test_too_few_usable_updates_raise_and_persist_nothing(tmp_path: Path) -> None:
    persistor = PTFileModelPersistor(tmp_path)
    with pytest.raises(RoundTooSmallError, match="1 usable result.*2 needed") as info:
        fold_round(
            FedAvg(),
            {"w": torch.zeros(2)},
            0,
            [_update("a", 1.0, 1), SiteUpdate.failed("b", "timed out")],
            needed=2,
            persistor=persistor,
            state=AggregatorStateStore(tmp_path / "state"),
        )
    assert info.value.refused == {"b": "timed out"}
    assert persistor.rounds_saved() == [] and not (tmp_path / "state").exists()


def test_persists_each_round_and_the_final_model(tmp_path: Path) -> None:
    persistor = PTFileModelPersistor(tmp_path)
    weights = {"w": torch.zeros(2)}
    for rnd in range(2):
        weights = fold_round(
            FedAvg(), weights, rnd, [_update("a", rnd + 1.0, 1)], needed=1,
            persistor=persistor, final=rnd == 1,
        ).weights
    assert persistor.rounds_saved() == [0, 1]
    assert torch.equal(load_weights(tmp_path / "model_out" / "checkpoint.pt")["w"], torch.full((2,), 2.0))


def test_a_restarted_server_resumes_fedadam_from_the_last_saved_round(tmp_path: Path) -> None:
    def run(aggregator, store, rounds, weights):
        for rnd in rounds:
            weights = fold_round(
                aggregator, weights, rnd, [_update("a", float(rnd + 1), 2)], needed=1, state=store
            ).weights
        return weights

    start = {"w": torch.zeros(2)}
    straight = run(FedAdam(), AggregatorStateStore(tmp_path / "one"), range(4), start)
    store = AggregatorStateStore(tmp_path / "two")
    half = run(FedAdam(), store, range(2), start)
    resumed = run(FedAdam(), store, range(2, 4), half)  # a fresh aggregator: moments from file
    assert torch.allclose(resumed["w"], straight["w"])
    forgot = run(FedAdam(), None, [2], half)  # without the saved moments round 2 differs
    assert not torch.allclose(forgot["w"], run(FedAdam(), store, [2], half)["w"])


def test_running_a_round_again_gives_the_same_weights(tmp_path: Path) -> None:
    """What lets the platform re-run an aggregation whose worker died after persisting."""
    store = AggregatorStateStore(tmp_path / "state")
    w0 = fold_round(FedAdam(), {"w": torch.zeros(2)}, 0, [_update("a", 1.0, 1)], needed=1, state=store).weights
    first = fold_round(FedAdam(), w0, 1, [_update("a", 2.0, 1)], needed=1, state=store).weights
    again = fold_round(FedAdam(), w0, 1, [_update("a", 2.0, 1)], needed=1, state=store).weights
    assert torch.equal(first["w"], again["w"])


def test_one_writer_and_one_loader_round_trip_with_the_hash(tmp_path: Path) -> None:
    digest = save_weights({"w": torch.arange(4.0)}, tmp_path / "x.safetensors")
    assert digest == sha256_file(tmp_path / "x.safetensors")
    assert torch.equal(load_weights(tmp_path / "x.safetensors")["w"], torch.arange(4.0))


def test_the_loader_tells_the_format_by_content_not_by_name(tmp_path: Path) -> None:
    save_weights({"w": torch.ones(2)}, tmp_path / "a")  # an artifact-store key: no suffix
    torch.save({"w": torch.zeros(2)}, tmp_path / "b")
    assert torch.equal(load_weights(tmp_path / "a")["w"], torch.ones(2))
    assert torch.equal(load_weights(tmp_path / "b")["w"], torch.zeros(2))


def test_a_fresh_unbound_fedadam_takes_the_parameter_names_from_the_saved_state(
    tmp_path: Path,
) -> None:
    """Rounds after 0 on the platform: the global weights file names no parameters."""
    store = AggregatorStateStore(tmp_path / "state")
    w0 = fold_round(FedAdam(), {"w": torch.zeros(2)}, 0, [_update("a", 1.0, 1)], needed=1, state=store).weights
    unbound = _FedAdam()
    w1 = fold_round(unbound, w0, 1, [_update("a", 2.0, 1)], needed=1, state=store).weights
    assert unbound.model_parameters == frozenset({"w"})
    assert not torch.equal(w1["w"], w0["w"])
