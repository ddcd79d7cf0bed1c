"""docs/own-model.md: its field and component tables are what the code says today."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel

from resonfl.config import FederationConfig, ModelConfig, TrainingConfig
from resonfl.job import Job

ROOT = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_own_model_doc", ROOT / "scripts" / "gen_own_model_doc.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_guides_generated_tables_are_current() -> None:
    gen = generator()
    current = gen.GUIDE.read_text(encoding="utf-8")
    assert gen.render(current) == current, (
        "docs/own-model.md is stale: python scripts/gen_own_model_doc.py"
    )


@pytest.mark.parametrize("model", [Job, ModelConfig, TrainingConfig, FederationConfig])
def test_every_job_field_is_described(model: type[BaseModel]) -> None:
    bare = [
        name for name, info in model.model_fields.items() if not (info.description or "").strip()
    ]
    assert not bare, (
        f"give these {model.__name__} fields a description (the guide's reference): {bare}"
    )


def test_every_aggregator_and_workflow_says_when_to_use_it() -> None:
    assert generator().missing_when() == []


def test_the_generator_sees_a_changed_field(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = generator()
    current = gen.GUIDE.read_text(encoding="utf-8")
    monkeypatch.setattr(TrainingConfig.model_fields["lr"], "description", "something else")
    assert gen.render(current) != current
