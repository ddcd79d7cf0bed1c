"""Issue 7 finding 5: a 50 MB meta.json with unknown keys was accepted and echoed back on
every read; a server config whose persistor `path` was `os.system` was accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resonfl.catalog import make_job
from resonfl.job import META, MAX_JSON_BYTES, SERVER_CONFIG, Job, JobValidationError


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    job = make_job("digits", sites=2, num_rounds=1, shards_dir=tmp_path / "shards")
    return job.render(tmp_path / "job")


def _edit(path: Path, change: object) -> None:
    data = json.loads(path.read_text())
    change(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))


def test_a_rendered_job_loads(job_dir: Path) -> None:
    assert Job.load(job_dir).name


def test_an_oversized_json_file_is_refused(job_dir: Path) -> None:
    _edit(job_dir / META, lambda d: d.update(name="x" * (MAX_JSON_BYTES + 1)))

    with pytest.raises(JobValidationError) as caught:
        Job.load(job_dir)

    assert caught.value.file == META and "at most" in caught.value.message


def test_an_unknown_meta_key_is_refused(job_dir: Path) -> None:
    _edit(job_dir / META, lambda d: d.update(payload="anything"))

    with pytest.raises(JobValidationError) as caught:
        Job.load(job_dir)

    assert (caught.value.file, caught.value.field) == (META, "payload")


@pytest.mark.parametrize("component", ["persistor", "shareable_generator"])
def test_a_platform_component_path_cannot_be_replaced(job_dir: Path, component: str) -> None:
    def swap(data: dict) -> None:
        for comp in data["components"]:
            if comp["id"] == component:
                comp["path"] = "os.system"

    _edit(job_dir / SERVER_CONFIG, swap)

    with pytest.raises(JobValidationError) as caught:
        Job.load(job_dir)

    assert caught.value.file == SERVER_CONFIG and "os.system" in caught.value.message
