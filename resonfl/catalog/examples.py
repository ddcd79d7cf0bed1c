"""The catalog's examples as their example.json files describe them (read-only lookups).

Kept apart from the package's `__init__` so `shards` can look an example up without
importing the package that imports it.
"""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass, field
from typing import Any

from resonfl.config import ModelConfig, TrainingConfig

EXAMPLE_FILE = "example.json"
MODEL_DEF = "model_def.py"


class UnknownExampleError(KeyError):
    """No catalog example has that name."""


@dataclass(frozen=True)
class ExampleInfo:
    """One catalog example as example.json describes it."""

    name: str
    description: str
    dataset: dict[str, Any]
    model: dict[str, Any]
    training: dict[str, Any]
    federation: dict[str, Any]
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def model_def_source(self) -> str:
        return _files().joinpath(self.name, MODEL_DEF).read_text("utf-8")

    def model_config(self) -> ModelConfig:
        return ModelConfig(source=self.model_def_source, **self.model)

    def training_config(self, **overrides: Any) -> TrainingConfig:
        return TrainingConfig(**{**self.training, **overrides})


def _files() -> Any:
    return importlib.resources.files("resonfl.catalog")


def list_examples() -> list[ExampleInfo]:
    """Every example in the catalog, sorted by name."""
    names = sorted(
        entry.name
        for entry in _files().iterdir()
        if entry.is_dir() and entry.joinpath(EXAMPLE_FILE).is_file()
    )
    return [get_example(name) for name in names]


def get_example(name: str) -> ExampleInfo:
    entry = _files().joinpath(name, EXAMPLE_FILE)
    if "/" in name or not entry.is_file():
        raise UnknownExampleError(f"no catalog example {name!r}")
    data = json.loads(entry.read_text("utf-8"))
    return ExampleInfo(
        name=name,
        description=data["description"],
        dataset=data["dataset"],
        model=data["model"],
        training=data.get("training", {}),
        federation=data.get("federation", {}),
        notes=data.get("notes", {}),
    )
