"""scripts/results_privacy.py keeps the rows it does not rerun: with no cache, `--only` reads
the other rows back from the table already in results.md instead of writing "not run"."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "results_privacy.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("results_privacy_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _entry(top1: float, eps: float | None = None, stopped: str | None = None) -> dict[str, Any]:
    return {"top1": top1, "rounds": 20, "round_s": 0.5, "epsilon": eps, "stopped": stopped}


def test_table_rows_read_back_as_the_values_written(script: ModuleType) -> None:
    results = {
        "fedavg": [_entry(0.9220)],
        "fedavg-attacked": [_entry(0.0975)],
        "dp-sgd-eps8": [_entry(0.8123, eps=7.99, stopped="privacy budget: site-1 (delta 1e-05)")],
    }
    text = "# results\n\n" + script.render(results, "test") + "\nafter\n"

    back = script.from_table(text)

    assert set(back) == set(results)
    assert back["fedavg-attacked"][0]["top1"] == pytest.approx(0.0975)
    assert back["dp-sgd-eps8"][0]["epsilon"] == pytest.approx(7.99)
    assert back["dp-sgd-eps8"][0]["stopped"] == "privacy budget: site-1 (delta 1e-05)"
    assert back["fedavg"][0]["epsilon"] is None


def test_rows_not_run_are_not_read_back(script: ModuleType) -> None:
    text = script.render({"fedavg": [_entry(0.9)]}, "test")

    assert set(script.from_table(text)) == {"fedavg"}


def test_a_lost_cache_keeps_the_table_rows_of_keys_not_rerun(
    script: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "results.md"
    out.write_text(script.render({"krum": [_entry(0.1)], "fedavg": [_entry(0.9)]}, "t"))
    cache = tmp_path / "cache.json"
    cache.write_text('{"fedavg": [{"top1": 0.95, "rounds": 20, "round_s": 1, "epsilon": null}]}')

    known = script._known(cache, out)

    assert known["krum"][0]["top1"] == pytest.approx(0.1)  # from the table
    assert known["fedavg"][0]["top1"] == pytest.approx(0.95)  # the cache wins


def test_a_row_run_more_often_shows_its_mean_and_range_and_reads_back_as_the_mean(
    script: ModuleType,
) -> None:
    results = {"fedavg": [_entry(0.9)], "dp-sgd-eps8": [_entry(0.6, 8.0), _entry(0.7, 8.0)]}
    text = script.render(results, "test")

    assert "| 0.6500 (mean of 2: 0.60-0.70) |" in text
    assert "1 training seed(s) a row; rows run more often say so" in text
    assert script.from_table(text)["dp-sgd-eps8"][0]["top1"] == pytest.approx(0.65)
