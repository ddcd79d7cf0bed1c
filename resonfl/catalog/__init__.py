"""The example catalog: ready-made jobs that run offline on one machine.

Each example is a folder ``resonfl/catalog/<name>/`` with ``model_def.py`` (the only file
that differs between jobs) and ``example.json`` (description, data set, default training
and federation settings, notes). `make_job` turns one into a `Job`, with shards.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from resonfl.catalog.examples import (
    MODEL_DEF,
    ExampleInfo,
    UnknownExampleError,
    get_example,
    list_examples,
)
from resonfl.catalog.shards import Split, make_shards, site_names
from resonfl.config import FederationConfig
from resonfl.job import Job


def make_job(
    name: str,
    sites: list[str] | int,
    num_rounds: int | None = None,
    shards_dir: Path | None = None,
    split: Split = "dirichlet",
    alpha: float = 0.5,
    seed: int = 0,
    job_name: str | None = None,
    **training_overrides: Any,
) -> Job:
    """A Job for catalog example `name` on `sites` (a list, or N for site-1..site-N).

    With `shards_dir`, per-site shards (and the global held-out test set) are written there
    and attached to the job; pass ``<job_dir>/shards`` to render without copying them. An
    example whose data stays at the sites (example.json `dataset.at_sites`) names that
    dataset instead and takes no shards.
    `seed` seeds the data split; the training seed is a training override (``seed=``
    is taken by the split, so use ``training_seed=``).
    """
    info = get_example(name)
    site_list = site_names(sites) if isinstance(sites, int) else list(sites)
    if "training_seed" in training_overrides:
        training_overrides["seed"] = training_overrides.pop("training_seed")
    at_sites = info.dataset.get("at_sites")  # data at the sites: a dataset name, no shards
    federation = FederationConfig(
        **{**info.federation, "sites": site_list}
        | ({"num_rounds": num_rounds} if num_rounds is not None else {})
        | ({"dataset": at_sites} if at_sites else {})
    )
    shards: dict[str, Path] = {}
    if shards_dir is not None and at_sites:
        raise ValueError(
            f"{name} trains on the sites' own dataset {at_sites!r}, never on shards: make "
            f"example folders with `resonfl shards --example {name} -o OUT --sites N` and "
            f"register each with `resonfl worker --dataset {at_sites}=OUT/site-N`"
        )
    if shards_dir is not None:
        made = make_shards(info.name, shards_dir, len(site_list), split, alpha, seed)
        shards = made if site_list == list(made) else _rename_shards(made, site_list)
    return Job(
        name=job_name or info.name,
        model=info.model_config(),
        training=info.training_config(**training_overrides),
        federation=federation,
        shards=shards,
    )


def _rename_shards(made: dict[str, Path], site_list: list[str]) -> dict[str, Path]:
    """Custom site names: move site-i's folder to the i-th name (beside it)."""
    shards = {}
    for (default, folder), site in zip(made.items(), site_list, strict=True):
        target = folder.with_name(site)
        if target != folder:
            if target.exists():
                raise FileExistsError(f"{target} exists; cannot rename shard {default}")
            folder.rename(target)
        shards[site] = target
    return shards


def load_model_def(name: str) -> ModuleType:
    """Import an example's model_def.py as a fresh module (for evaluation and tests)."""
    source = get_example(name).model_def_source
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_DEF
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location(f"resonfl_catalog_{name}_model_def", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def evaluate_on_test(
    name: str,
    weights: dict[str, Any] | str | Path,
    shards_dir: str | Path,
    tta_hflip: bool | None = None,
) -> dict[str, float]:
    """Held-out test loss and top-1 of `weights` (a state dict or a checkpoint file).

    Uses the example's own `load_dataset(shards_dir, "test")` and the executor's evaluate,
    so the numbers are computed exactly as sites compute val metrics.
    """
    from resonfl.templates import custom_client_executor as kit  # lazy: torch

    info = get_example(name)
    module = load_model_def(name)
    model = getattr(module, info.model["class_name"])(**info.model.get("args", {}))
    state = kit.load_weights(weights) if isinstance(weights, str | Path) else weights
    model.load_state_dict(state, strict=True)
    args = info.training_config().model_dump(mode="json")
    if tta_hflip is not None:
        args["tta_hflip"] = tta_hflip
    task = {
        "site": "test",
        "round": 0,
        "num_rounds": 1,
        "data_root": str(shards_dir),
        "state_dir": str(shards_dir),
        "out_dir": str(shards_dir),
    }
    env = kit.FLEnv(task, args)
    return env.evaluate(model, module.load_dataset(Path(shards_dir), "test"))


__all__ = [
    "ExampleInfo",
    "UnknownExampleError",
    "evaluate_on_test",
    "get_example",
    "list_examples",
    "load_model_def",
    "make_job",
    "make_shards",
]
