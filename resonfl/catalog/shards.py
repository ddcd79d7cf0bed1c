"""Per-site data shards from a catalog example's data set, IID or Dirichlet(alpha) by label.

Layout under ``out_dir``::

    site-1/train.npz, site-1/val.npz           (format "npz": X float32, y int64)
    site-1/train/<class>/*.png, site-1/val/... (format "image_folder", plus classes.json)
    site-1/<class>/*.png                       (format "class_folders": a site's own image
                                                folder, registered with --dataset; the job
                                                splits train/val itself)
    test.npz  or  test/<class>/*.png           (global held-out set, never given to a site)

The held-out test split is drawn first (stratified, from `seed` only), so it is the same for
any number of sites or split kind; each site's val split comes from its own share.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np

from resonfl.catalog.datasets import load_arrays
from resonfl.catalog.examples import get_example

Split = Literal["iid", "dirichlet"]
DEFAULT_MIN_SAMPLES = 10


def site_names(num_sites: int) -> list[str]:
    return [f"site-{i}" for i in range(1, num_sites + 1)]


def split_test(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (pool, test) indices."""
    rng = np.random.default_rng([seed, 7])
    pool, test = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = round(len(idx) * test_fraction)
        test.append(idx[:n_test])
        pool.append(idx[n_test:])
    return np.sort(np.concatenate(pool)), np.sort(np.concatenate(test))


def partition(
    y: np.ndarray,
    num_sites: int,
    split: Split = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """Positions into `y` for each site: disjoint, covering every sample.

    Dirichlet: for every class, site shares ~ Dir(alpha); resampled until each site has at
    least `min_samples` (small alpha → each site sees few classes).
    """
    if num_sites < 1:
        raise ValueError("num_sites must be at least 1")
    if len(y) < num_sites * min_samples:
        raise ValueError(f"{len(y)} samples cannot give {num_sites} sites {min_samples} each")
    rng = np.random.default_rng([seed, 11])
    if split == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(len(y)), num_sites)]
    if split != "dirichlet":
        raise ValueError(f"split must be 'iid' or 'dirichlet', got {split!r}")
    if alpha <= 0:
        raise ValueError("alpha must be positive")
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_sites)]
        for label in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == label))
            shares = rng.dirichlet(np.full(num_sites, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for site, chunk in enumerate(np.split(idx, cuts)):
                parts[site].append(chunk)
        sites = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(s) for s in sites) >= min_samples:
            return sites
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) split gave every one of {num_sites} sites "
        f"{min_samples} samples in {max_tries} tries; raise alpha or lower num_sites"
    )


def label_histogram(y: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(y, minlength=num_classes).tolist()


def _train_val(
    n: int, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def write_split(
    folder: Path, split: str, x: np.ndarray, y: np.ndarray, fmt: str, classes: list[str]
) -> None:
    """Write one split as ``<split>.npz`` or ``<split>/<class>/<i>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "npz":
        np.savez(folder / f"{split}.npz", X=x.astype(np.float32), y=y.astype(np.int64))
        return
    if fmt not in ("image_folder", "class_folders"):
        raise ValueError(f"unknown shard format {fmt!r}")
    from PIL import Image  # lazy: images only

    root = folder / split
    if root.exists():
        shutil.rmtree(root)
    for name in classes:  # every class folder exists, even empty: labels stay aligned
        (root / name).mkdir(parents=True)
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        Image.fromarray(image).save(root / classes[int(label)] / f"{i:05d}.png")
    (folder / "classes.json").write_text(json.dumps(classes) + "\n", encoding="utf-8")


def make_shards(
    example: str | dict[str, Any],
    out_dir: str | Path,
    num_sites: int,
    split: Split = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    verbose: bool = True,
) -> dict[str, Path]:
    """Write per-site train/val shards and the global test set; return {site: folder}."""
    spec = _dataset_spec(example)
    x, y, classes = load_arrays(spec, seed=seed)
    fmt = str(spec.get("format", "npz"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pool, test = split_test(y, test_fraction, seed)
    write_split(out, "test", x[test], y[test], fmt, classes)
    parts = partition(y[pool], num_sites, split, alpha, seed, min_samples)
    rng = np.random.default_rng([seed, 13])
    shards: dict[str, Path] = {}
    for site, part in zip(site_names(num_sites), parts, strict=True):
        idx = pool[part]
        if fmt == "class_folders":  # the site's whole share, one folder per class
            write_split(out, site, x[idx], y[idx], fmt, classes)
            shards[site] = out / site
            if verbose:
                print(f"{site}: {len(idx)} images, labels {label_histogram(y[idx], len(classes))}")
            continue
        train, val = _train_val(len(idx), val_fraction, rng)
        folder = out / site
        write_split(folder, "train", x[idx[train]], y[idx[train]], fmt, classes)
        write_split(folder, "val", x[idx[val]], y[idx[val]], fmt, classes)
        shards[site] = folder
        if verbose:
            print(
                f"{site}: {len(train)} train / {len(val)} val, labels {label_histogram(y[idx], len(classes))}"
            )
    if verbose:
        print(f"test: {len(test)} held out at {out / ('test.npz' if fmt == 'npz' else 'test')}")
    return shards


def merge_npz_shards(shards: list[Path], out_dir: str | Path) -> Path:
    """One folder whose train/val are the union of the sites' (the centralized baseline)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        parts = [np.load(Path(s) / f"{split}.npz") for s in shards]
        x = np.concatenate([p["X"] for p in parts])
        y = np.concatenate([p["y"] for p in parts])
        np.savez(out / f"{split}.npz", X=x, y=y)
    return out


def _dataset_spec(example: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(example, dict):
        return example.get("dataset", example)
    return get_example(example).dataset
