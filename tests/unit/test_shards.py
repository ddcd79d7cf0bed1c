"""Per-site shards: IID and Dirichlet(alpha) splits by label, and the files they become."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from resonfl.catalog.shards import make_shards, partition, split_test

LABELS = np.repeat(np.arange(10), 100)


def dominant_share(parts: list[np.ndarray], y: np.ndarray) -> float:
    """Mean over sites of the share of the site's most common label."""
    return float(np.mean([np.bincount(y[p]).max() / len(p) for p in parts]))


@pytest.mark.parametrize("split", ["iid", "dirichlet"])
def test_sites_are_disjoint_and_cover_every_sample(split: str) -> None:
    parts = partition(LABELS, 4, split, alpha=0.5, seed=1)
    joined = np.concatenate(parts)
    assert len(joined) == len(set(joined.tolist())) == len(LABELS)


def test_iid_sites_are_balanced_in_size_and_labels() -> None:
    parts = partition(LABELS, 4, "iid", seed=0)
    assert {len(p) for p in parts} == {250}
    assert dominant_share(parts, LABELS) < 0.2


def test_small_alpha_skews_labels_and_large_alpha_does_not() -> None:
    skewed = partition(LABELS, 4, "dirichlet", alpha=0.05, seed=0)
    mixed = partition(LABELS, 4, "dirichlet", alpha=100.0, seed=0)
    assert dominant_share(skewed, LABELS) > 0.4
    assert dominant_share(mixed, LABELS) < 0.15


def test_dirichlet_gives_every_site_the_minimum() -> None:
    for seed in range(5):
        parts = partition(LABELS, 8, "dirichlet", alpha=0.1, seed=seed, min_samples=30)
        assert min(len(p) for p in parts) >= 30


def test_split_is_reproducible_from_the_seed() -> None:
    a = partition(LABELS, 4, "dirichlet", alpha=0.3, seed=7)
    b = partition(LABELS, 4, "dirichlet", alpha=0.3, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_impossible_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot give"):
        partition(LABELS[:20], 4, "dirichlet", min_samples=10)


def test_test_split_is_stratified_and_disjoint() -> None:
    pool, test = split_test(LABELS, 0.2, seed=0)
    assert np.bincount(LABELS[test]).tolist() == [20] * 10
    assert not set(pool.tolist()) & set(test.tolist())


def test_digits_shards_are_npz_files_with_a_held_out_test_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shards = make_shards("digits", tmp_path, 3, "dirichlet", alpha=0.5, seed=0)
    assert list(shards) == ["site-1", "site-2", "site-3"]
    total = 0
    for folder in shards.values():
        for split in ("train", "val"):
            data = np.load(folder / f"{split}.npz")
            assert data["X"].dtype == np.float32 and data["y"].dtype == np.int64
            assert data["X"].shape[1:] == (1, 8, 8)
            total += len(data["y"])
    test = np.load(tmp_path / "test.npz")
    assert total + len(test["y"]) == 1797
    assert "site-1:" in capsys.readouterr().out  # the per-site label histogram


def test_the_test_set_does_not_depend_on_the_site_split(tmp_path: Path) -> None:
    make_shards("digits", tmp_path / "a", 2, "iid", seed=3, verbose=False)
    make_shards("digits", tmp_path / "b", 5, "dirichlet", alpha=0.2, seed=3, verbose=False)
    a, b = np.load(tmp_path / "a" / "test.npz"), np.load(tmp_path / "b" / "test.npz")
    assert np.array_equal(a["X"], b["X"]) and np.array_equal(a["y"], b["y"])


def test_image_shards_keep_every_class_folder_and_the_class_order(tmp_path: Path) -> None:
    shards = make_shards("classify", tmp_path, 2, "dirichlet", alpha=0.1, seed=0, verbose=False)
    classes = json.loads((shards["site-1"] / "classes.json").read_text())
    assert len(classes) == 5
    for folder in shards.values():
        assert sorted(p.name for p in (folder / "train").iterdir()) == sorted(classes)
    assert len(list((tmp_path / "test").rglob("*.png"))) == 80
