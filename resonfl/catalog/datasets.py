"""The catalog's offline data sets: scikit-learn's bundled sets and a generated image set.

Every source gives ``(X, y, classes)`` with X already in the model's input layout (float32
arrays for tabular/digits, uint8 HWC images for image folders) and y int64 labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Arrays = tuple[np.ndarray, np.ndarray, list[str]]

SHAPE_CLASSES = ["disc", "ring", "square", "plus", "stripes"]


def load_sklearn(name: str) -> Arrays:
    """digits → (N, 1, 8, 8) in [0, 1]; breast_cancer / wine → raw features (N, F)."""
    from sklearn import datasets  # type: ignore[import-untyped]

    loaders = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "iris": datasets.load_iris,
    }
    if name not in loaders:
        raise ValueError(f"unknown scikit-learn data set {name!r} ({', '.join(loaders)})")
    bunch = loaders[name]()
    x = np.asarray(bunch.data, dtype=np.float32)
    if name == "digits":
        x = (x / 16.0).reshape(-1, 1, 8, 8)
    classes = [str(c) for c in getattr(bunch, "target_names", range(int(bunch.target.max()) + 1))]
    return x, np.asarray(bunch.target, dtype=np.int64), classes


def synthetic_shapes(n_per_class: int = 80, size: int = 32, seed: int = 0) -> Arrays:
    """Colored shapes on noisy backgrounds; every class is mirror-symmetric (hflip keeps it).

    Classes: disc, ring, square, plus, horizontal stripes. Position, size, colors and noise
    vary per image, so the task needs a real (if small) convolutional model.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images, labels = [], []
    for label in range(len(SHAPE_CLASSES)):
        for _ in range(n_per_class):
            images.append(_shape_image(label, rng, xx, yy, size))
            labels.append(label)
    order = rng.permutation(len(labels))
    return np.stack(images)[order], np.asarray(labels, dtype=np.int64)[order], list(SHAPE_CLASSES)


def _shape_image(
    label: int, rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, size: int
) -> np.ndarray:
    background = rng.uniform(0, 0.5, 3)
    color = rng.uniform(0.5, 1.0, 3)
    r = rng.uniform(size * 0.18, size * 0.32)
    cx, cy = rng.uniform(r + 1, size - r - 1, 2)
    dist = np.hypot(xx - cx, yy - cy)
    if label == 0:
        mask = dist <= r
    elif label == 1:
        mask = (dist <= r) & (dist >= r * 0.55)
    elif label == 2:
        mask = (np.abs(xx - cx) <= r * 0.85) & (np.abs(yy - cy) <= r * 0.85)
    elif label == 3:
        arm = r * 0.3
        inside = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
        mask = inside & ((np.abs(xx - cx) <= arm) | (np.abs(yy - cy) <= arm))
    else:
        period = rng.uniform(4, 7)
        mask = np.sin(2 * np.pi * yy / period + rng.uniform(0, 6.3)) > 0
    img = np.where(mask[..., None], color, background)
    img = img + rng.normal(0, 0.06, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def load_arrays(dataset: dict[str, Any], seed: int = 0) -> Arrays:
    """The arrays an example's ``dataset`` spec (from example.json) describes."""
    source = dataset.get("source")
    if source == "sklearn":
        return load_sklearn(str(dataset["name"]))
    if source == "synthetic_shapes":
        return synthetic_shapes(
            int(dataset.get("n_per_class", 80)), int(dataset.get("image_size", 32)), seed
        )
    raise ValueError(f"unknown dataset source {source!r}")
