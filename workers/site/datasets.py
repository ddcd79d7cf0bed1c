"""The datasets a site declares: name -> folder, checked when the worker starts.

A site operator registers what the site holds (`resonfl worker --dataset NAME=/folder[:format]`
or the `[datasets.NAME]` tables of the settings file). At start the worker checks each folder
(it exists, it is readable) and counts what the format allows; the heartbeat reports only the
name, format, description, sample count and label counts (never a file name or a byte of
content), so the server can show which sites hold what, and a job can ask for a dataset by
name: on the site its `DATA_ROOT` is that folder, bound read-only into the job's sandbox.

Formats:
  image-folder  images (png, jpg, jpeg, bmp, gif, webp) in class folders; an image's label is
                its folder's name (`<class>/x.png`, also `train/<class>/x.png`)
  npz           `*.npz` files holding a label array `y` (or `labels`/`label`); loaded with
                allow_pickle=False
  csv           `*.csv` files with a header; labels from a `label`/`y`/`target`/`class` column
  files         anything else: files are counted, labels are not known
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resonfl.config import DATASET_NAME_RE

FORMATS = ("image-folder", "npz", "csv", "files")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
LABEL_KEYS = ("y", "labels", "label")
LABEL_COLUMNS = ("label", "y", "target", "class")
MAX_LABELS = 1000  # more distinct values than this are not classes: report no label counts
MAX_DESCRIPTION = 200


class DatasetError(ValueError):
    """A declared dataset that cannot be used; the message names it."""


@dataclass(frozen=True)
class SiteDataset:
    """One dataset as the operator declared it."""

    name: str
    path: Path
    format: str | None = None  # None: guessed from the folder's contents
    description: str = ""


@dataclass
class DatasetReport:
    """What the heartbeat says about a dataset: counts, never names of files or contents."""

    name: str
    format: str
    description: str
    samples: int
    labels: dict[str, int] | None = field(default=None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "description": self.description,
            "samples": self.samples,
            "labels": self.labels,
        }


def parse_flag(value: str) -> SiteDataset:
    """`NAME=/folder[:format]` (the `--dataset` flag) -> SiteDataset."""
    name, sep, rest = value.partition("=")
    if not sep or not rest:
        raise DatasetError(f"--dataset {value!r}: write NAME=/folder or NAME=/folder:FORMAT")
    fmt: str | None = None
    head, colon, tail = rest.rpartition(":")
    if colon and tail in FORMATS:
        rest, fmt = head, tail
    elif colon and "/" not in tail and not Path(rest).exists():  # a mistyped format
        raise DatasetError(
            f"--dataset {value!r}: format {tail!r} is not one of {', '.join(FORMATS)}"
        )
    return declared(name.strip(), rest, fmt, "", where=f"--dataset {value!r}")


def from_table(name: str, table: dict[str, Any], where: str) -> SiteDataset:
    """A `[datasets.NAME]` table of the settings file: path, format, description."""
    unknown = sorted(set(table) - {"path", "format", "description"})
    if unknown:
        raise DatasetError(f"{where}: unknown key {unknown[0]!r} (path, format, description)")
    path, fmt, text = table.get("path"), table.get("format"), table.get("description", "")
    if not isinstance(path, str) or not path:
        raise DatasetError(f"{where}.path: the dataset's folder is required")
    if fmt is not None and not isinstance(fmt, str):
        raise DatasetError(f"{where}.format: one of {', '.join(FORMATS)}")
    if not isinstance(text, str):
        raise DatasetError(f"{where}.description: one line of text")
    return declared(name, path, fmt, text, where=where)


def declared(name: str, path: str, fmt: str | None, description: str, *, where: str) -> SiteDataset:
    if not DATASET_NAME_RE.fullmatch(name):
        raise DatasetError(
            f"{where}: dataset name {name!r} must be 1-63 letters, digits, '.', '_' or '-'"
        )
    if fmt is not None and fmt not in FORMATS:
        raise DatasetError(f"{where}: format {fmt!r} is not one of {', '.join(FORMATS)}")
    if "\n" in description or len(description) > MAX_DESCRIPTION:
        raise DatasetError(f"{where}: description must be one line of at most 200 characters")
    return SiteDataset(name, Path(path).expanduser().resolve(), fmt, description)


def check_unique(datasets: list[SiteDataset]) -> None:
    seen: set[str] = set()
    for ds in datasets:
        if ds.name in seen:
            raise DatasetError(f"dataset {ds.name!r} is declared twice")
        seen.add(ds.name)


# ------------------------------------------------------------------------------ inspection
def inspect(ds: SiteDataset) -> DatasetReport:
    """Check the folder and count its samples (and labels where the format has them)."""
    if not ds.path.is_dir():
        raise DatasetError(f"dataset {ds.name!r}: {ds.path} is not a folder")
    if not os.access(ds.path, os.R_OK | os.X_OK):
        raise DatasetError(f"dataset {ds.name!r}: {ds.path} is not readable by this worker")
    fmt = ds.format or guess_format(ds.path)
    try:
        samples, labels = COUNTERS[fmt](ds.path)
    except (OSError, ValueError, csv.Error) as exc:
        raise DatasetError(f"dataset {ds.name!r} ({fmt}): {type(exc).__name__}: {exc}") from None
    if samples == 0:
        raise DatasetError(f"dataset {ds.name!r}: no {fmt} samples found in {ds.path}")
    if labels is not None and len(labels) > MAX_LABELS:
        labels = None
    return DatasetReport(ds.name, fmt, ds.description, samples, labels)


def guess_format(root: Path) -> str:
    suffixes = Counter(p.suffix.lower() for p in _files(root))
    if any(suffixes[s] for s in IMAGE_SUFFIXES):
        return "image-folder"
    for fmt in ("npz", "csv"):
        if suffixes[f".{fmt}"]:
            return fmt
    return "files"


def _files(root: Path) -> Iterator[Path]:
    for folder, dirs, names in os.walk(root, onerror=_raise):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                yield Path(folder) / name


def _raise(exc: OSError) -> None:
    raise exc


def _count_images(root: Path) -> tuple[int, dict[str, int] | None]:
    labels: Counter[str] = Counter(
        p.parent.name
        for p in _files(root)
        if p.suffix.lower() in IMAGE_SUFFIXES and p.parent != root
    )
    return sum(labels.values()), dict(sorted(labels.items()))


def _count_npz(root: Path) -> tuple[int, dict[str, int] | None]:
    import numpy as np  # lazy: only sites with npz datasets pay for it

    samples, labels = 0, Counter[str]()
    known = True
    for path in (p for p in _files(root) if p.suffix == ".npz"):
        with np.load(path, allow_pickle=False) as data:
            key = next((k for k in LABEL_KEYS if k in data.files), None)
            if key is None:
                known = False
                first = data[data.files[0]] if data.files else np.zeros(0)
                samples += int(first.shape[0]) if first.ndim else 0
                continue
            y = data[key]
            samples += int(y.shape[0])
            values, counts = np.unique(y, return_counts=True)
            labels.update({str(v): int(c) for v, c in zip(values.tolist(), counts, strict=True)})
    return samples, (dict(sorted(labels.items())) if known else None)


def _count_csv(root: Path) -> tuple[int, dict[str, int] | None]:
    samples, labels = 0, Counter[str]()
    known = True
    for path in (p for p in _files(root) if p.suffix == ".csv"):
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
            known = known and col is not None
            for row in reader:
                if not row:
                    continue
                samples += 1
                if col is not None and col < len(row):
                    labels[row[col].strip()] += 1
    return samples, (dict(sorted(labels.items())) if known else None)


def _count_files(root: Path) -> tuple[int, dict[str, int] | None]:
    return sum(1 for _ in _files(root)), None


COUNTERS = {
    "image-folder": _count_images,
    "npz": _count_npz,
    "csv": _count_csv,
    "files": _count_files,
}
