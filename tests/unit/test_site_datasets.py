"""A site's declared datasets and policy: parsed, checked and counted at worker start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from resonfl_server.workers.site.config import SiteConfig, declare
from resonfl_server.workers.site.datasets import DatasetError, SiteDataset, inspect, parse_flag
from resonfl_server.workers.site.policy import PolicyError, SitePolicy, load_settings_file


def _images(root: Path, counts: dict[str, int]) -> Path:
    for label, n in counts.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            (root / label / f"secret-patient-{i}.png").write_bytes(b"\x89PNG fake")
    return root


def test_a_flag_names_the_folder_and_optionally_the_format(tmp_path: Path) -> None:
    ds = parse_flag(f"cxr={tmp_path}:image-folder")
    assert (ds.name, ds.path, ds.format) == ("cxr", tmp_path.resolve(), "image-folder")
    assert parse_flag(f"cxr={tmp_path}").format is None


@pytest.mark.parametrize(
    ("flag", "named"),
    [
        ("cxr", "NAME=/folder"),
        ("bad name=/x", "dataset name"),
        ("x=/a:jpeg2", "format .jpeg2. is not one of"),
    ],
)
def test_a_bad_flag_is_refused_with_what_is_wrong(flag: str, named: str) -> None:
    with pytest.raises(DatasetError, match=named):
        parse_flag(flag)


def test_an_image_folder_counts_samples_per_class_without_file_names(tmp_path: Path) -> None:
    report = inspect(SiteDataset("xr", _images(tmp_path / "xr", {"cat": 3, "dog": 2})))
    assert (report.format, report.samples, report.labels) == (
        "image-folder",
        5,
        {"cat": 3, "dog": 2},
    )
    assert "secret" not in repr(report.as_dict())


def test_npz_shards_count_their_label_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "train.npz", X=np.zeros((5, 2)), y=np.array([0, 0, 1, 2, 2]))
    np.savez(tmp_path / "val.npz", X=np.zeros((1, 2)), y=np.array([1]))
    report = inspect(SiteDataset("d", tmp_path))
    assert (report.format, report.samples, report.labels) == ("npz", 6, {"0": 2, "1": 2, "2": 2})


def test_csv_counts_rows_and_its_label_column(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("f1,f2,Label\n1,2,yes\n3,4,no\n5,6,yes\n")
    report = inspect(SiteDataset("t", tmp_path))
    assert (report.format, report.samples, report.labels) == ("csv", 3, {"no": 1, "yes": 2})


def test_a_missing_or_empty_folder_is_refused_naming_the_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="'gone'.*not a folder"):
        inspect(SiteDataset("gone", tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="'empty': no"):
        inspect(SiteDataset("empty", tmp_path / "empty", "npz"))


def test_the_settings_file_declares_datasets_and_policy(tmp_path: Path) -> None:
    _images(tmp_path / "img", {"a": 1})
    settings = tmp_path / "site.toml"
    settings.write_text(
        f'[datasets.images]\npath = "{tmp_path / "img"}"\ndescription = "scans"\n'
        '[policy]\nsubmitters = ["Alice@x.org"]\nrequire_approval = true\nmax_gpus = 1\n'
        "max_wall_time_s = 60\n"
    )
    datasets, policy = load_settings_file(settings)
    assert [(d.name, d.description) for d in datasets] == [("images", "scans")]
    assert policy == SitePolicy(["alice@x.org"], True, 1, 60.0)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[policy]\nnetwork = true\n", "RESONFL_SANDBOX_NETWORK"),
        ("[policy]\nrequirements = true\n", "RESONFL_REQUIREMENTS_POLICY"),
        ("[policy]\nmax_gpus = -1\n", "policy.max_gpus"),
        ('[policy]\nsubmitters = "bob"\n', "policy.submitters"),
        ('[datasets.x]\nformat = "npz"\n', "datasets.x.path"),
        ("[other]\n", "unknown table"),
        ("not toml", "not TOML"),
    ],
)
def test_a_bad_settings_file_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=named):
        load_settings_file(path)


def test_declare_lets_a_flag_override_the_file_and_counts_everything(tmp_path: Path) -> None:
    _images(tmp_path / "a", {"x": 2})
    _images(tmp_path / "b", {"y": 1})
    settings = tmp_path / "s.toml"
    settings.write_text(f'[datasets.img]\npath = "{tmp_path / "a"}"\n')
    cfg = SiteConfig("site-1", "t", "http://x", tmp_path)
    declare(cfg, settings, [f"img={tmp_path / 'b'}"], require_approval=True)
    assert [(r.name, r.samples) for r in cfg.reports] == [("img", 1)]
    assert cfg.policy.require_approval


def test_policy_refuses_a_submitter_not_on_the_list_gpus_and_unapproved_jobs() -> None:
    policy = SitePolicy(submitters=["a@x"], max_gpus=1)
    assert "submitted by b@x" in str(policy.refusal({"submitter": "b@x"}, 0, "s"))
    assert "at most 1 GPU" in str(policy.refusal({"submitter": "a@x"}, 2, "s"))
    assert policy.refusal({"submitter": "a@x"}, 1, "s") is None
    approval = SitePolicy(require_approval=True)
    assert "approved" in str(approval.refusal({"approved_by": []}, 0, "s"))
    assert approval.refusal({"approved_by": ["s"]}, 0, "s") is None


def test_resonfl_up_turns_its_site_flags_into_each_workers_flags(tmp_path: Path) -> None:
    import argparse

    from resonfl_server.launcher.commands import _site_args

    args = argparse.Namespace(
        sites=2,
        site_dataset=[f"site-1:images={tmp_path}", "site-2:tab=rel/folder:csv"],
        site_settings=[f"site-2={tmp_path / 's.toml'}"],
        site_approval=["site-2"],
    )
    out = _site_args(args)
    assert out["site-1"] == ["--dataset", f"images={tmp_path}"]
    assert out["site-2"][0:2] == ["--dataset", f"tab={Path('rel/folder:csv').resolve()}"]
    assert out["site-2"][2:] == ["--settings", str(tmp_path / "s.toml"), "--require-approval"]
    with pytest.raises(ValueError, match="--site-dataset 'site-9:x=/a'"):
        _site_args(argparse.Namespace(sites=2, site_dataset=["site-9:x=/a"], site_settings=[], site_approval=[]))


def test_a_jobs_wall_time_on_the_site_is_budgeted_across_rounds(tmp_path: Path) -> None:
    from resonfl_server.workers.site.rounds import _spend_wall, _wall_budget

    cfg = SiteConfig("site-1", "t", "http://x", tmp_path, policy=SitePolicy(max_wall_time_s=100))
    assert _wall_budget(cfg, tmp_path, 3600) == (100, None)
    _spend_wall(tmp_path, 70)
    assert _wall_budget(cfg, tmp_path, 3600) == (30, None)  # the round gets what is left
    assert _wall_budget(cfg, tmp_path, 10) == (10, None)
    _spend_wall(tmp_path, 31)
    limit, refused = _wall_budget(cfg, tmp_path, 3600)
    assert limit == 0 and "at most 100 s of wall time; this job has used 101 s" in str(refused)
    unlimited = SiteConfig("site-1", "t", "http://x", tmp_path)
    assert _wall_budget(unlimited, tmp_path, 3600) == (3600, None)
