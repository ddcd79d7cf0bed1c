"""The example catalog: what it lists, the jobs it renders, and that each example learns."""

from __future__ import annotations

from pathlib import Path

import pytest

from resonfl.catalog import evaluate_on_test, get_example, list_examples, make_job
from resonfl.catalog.inprocess import run_in_process
from resonfl.job import EXECUTOR, PERSISTOR, Job, template_text

NAMES = ["classify", "digits", "tabular"]  # examples that ship shards; images: data at sites


def test_the_catalog_lists_at_least_the_three_offline_examples() -> None:
    examples = {e.name: e for e in list_examples()}
    assert set(NAMES) <= set(examples)
    for info in examples.values():
        assert info.description and info.notes
        info.training_config()  # defaults are a valid TrainingConfig


def test_tta_is_off_for_digits_with_a_reason_and_on_for_classify() -> None:
    digits, classify = get_example("digits"), get_example("classify")
    assert digits.training["tta_hflip"] is False
    assert "mirror" in digits.notes["tta_hflip"]
    assert classify.training["tta_hflip"] is True


def test_job_scripts_are_byte_identical_across_examples_and_templates(tmp_path: Path) -> None:
    rendered = {}
    for name in NAMES:
        job_dir = make_job(name, 2).render(tmp_path / name)
        rendered[name] = {f: (job_dir / f).read_bytes() for f in (EXECUTOR, PERSISTOR)}
    for script in (EXECUTOR, PERSISTOR):
        template = template_text(script).encode("utf-8")
        assert all(files[script] == template for files in rendered.values()), script


def test_make_job_names_sites_and_applies_overrides(tmp_path: Path) -> None:
    job = make_job("digits", 3, num_rounds=7, lr=0.01, training_seed=5)
    assert job.federation.sites == ["site-1", "site-2", "site-3"]
    assert job.federation.num_rounds == 7
    assert (job.training.lr, job.training.seed) == (0.01, 5)
    named = make_job("tabular", ["alpha", "beta"], shards_dir=tmp_path / "shards", split="iid")
    assert sorted(named.shards) == ["alpha", "beta"]
    assert (tmp_path / "shards" / "alpha" / "train.npz").is_file()


def test_a_rendered_catalog_job_loads_back_equal(tmp_path: Path) -> None:
    job = make_job("digits", 2, shards_dir=tmp_path / "job" / "shards", split="iid")
    loaded = Job.load(job.render(tmp_path / "job"))
    assert loaded.training == job.training and loaded.model == job.model
    assert sorted(loaded.shards) == ["site-1", "site-2"]


CHANCE = {"digits": 0.1, "tabular": 0.63, "classify": 0.2}  # tabular: majority class
ONE_ROUND = {"digits": {}, "tabular": {}, "classify": {"local_steps": 40}}


@pytest.mark.parametrize("name", NAMES)
def test_each_example_learns_in_one_round_on_its_data(name: str, tmp_path: Path) -> None:
    overrides = {"local_steps": 30, "warmup_steps": 3, **ONE_ROUND[name]}
    job = make_job(
        name, 2, num_rounds=1, shards_dir=tmp_path / "job" / "shards", split="iid", **overrides
    )
    job.render(tmp_path / "job")
    run = run_in_process(tmp_path / "job", tmp_path / "ws")
    held_out = evaluate_on_test(name, run.state, tmp_path / "job" / "shards")
    assert held_out["top1"] > CHANCE[name] + 0.2, held_out


def test_images_names_the_sites_dataset_and_takes_no_shards(tmp_path: Path) -> None:
    job = make_job("images", 2)
    assert job.federation.dataset == "images" and job.shards == {}
    assert get_example("images").training["tta_hflip"] is True  # every shape is mirror-symmetric
    with pytest.raises(ValueError, match="resonfl shards --example images"):
        make_job("images", 2, shards_dir=tmp_path / "shards")
