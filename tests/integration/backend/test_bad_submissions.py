"""Bad submissions get a 4xx naming the problem and leave nothing behind."""

from __future__ import annotations

import io
import json
import pickle
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
from backend_support import MAX_UPLOAD, job_spec, submit_zip, zip_folder
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from resonfl_server.backend.models import Artifact, Job


@pytest.fixture
def assert_nothing_left(app: Any):  # type: ignore[no-untyped-def]
    store = app.state.store
    yield
    with app.state.session_factory() as db:
        assert db.scalar(select(func.count()).select_from(Job)) == 0
        assert db.scalar(select(func.count()).select_from(Artifact)) == 0
    assert list(store.jobs.iterdir()) == []
    assert [p for p in store.artifacts.rglob("*") if p.is_file()] == []
    assert list(store.tmp.iterdir()) == []


def _detail(response: Any) -> dict[str, str]:
    assert 400 <= response.status_code < 500, response.text
    return response.json()["detail"]


def test_a_missing_file_is_named(
    client: TestClient, job_dir: Path, user_token: str, assert_nothing_left: None
) -> None:
    response = submit_zip(client, user_token, zip_folder(job_dir, exclude=("custom_persistor.py",)))
    assert response.status_code == 422
    assert _detail(response) == {
        "file": "custom_persistor.py",
        "field": "",
        "message": "file is missing",
    }


def test_bad_json_is_named(
    client: TestClient, job_dir: Path, user_token: str, assert_nothing_left: None
) -> None:
    (job_dir / "config_fed_server.json").write_text("{not json")
    detail = _detail(submit_zip(client, user_token, zip_folder(job_dir)))
    assert detail["file"] == "config_fed_server.json" and "JSON" in detail["message"]


def test_a_wrong_class_path_is_named(
    client: TestClient, job_dir: Path, user_token: str, assert_nothing_left: None
) -> None:
    server = json.loads((job_dir / "config_fed_server.json").read_text())
    for comp in server["components"]:
        if comp["id"] == "aggregator":
            comp["path"] = "resonfl.fl.nowhere.NoSuchAggregator"
    (job_dir / "config_fed_server.json").write_text(json.dumps(server))
    detail = _detail(submit_zip(client, user_token, zip_folder(job_dir)))
    assert detail["file"] == "config_fed_server.json" and detail["field"] == "aggregator_path"


def test_a_zip_with_parent_paths_is_refused(
    client: TestClient, job_dir: Path, user_token: str, assert_nothing_left: None
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("meta.json", "model_def.py"):
            archive.write(job_dir / name, name)
        archive.writestr("../../evil.py", "print('owned')")
    detail = _detail(submit_zip(client, user_token, buffer.getvalue()))
    assert detail["file"] == "job_zip" and detail["field"] == "../../evil.py"
    assert ".." in detail["message"]


def test_absolute_paths_and_symlinks_in_a_zip_are_refused(
    client: TestClient, job_dir: Path, user_token: str, assert_nothing_left: None
) -> None:
    absolute = io.BytesIO()
    with zipfile.ZipFile(absolute, "w") as archive:
        archive.writestr("/etc/evil", "x")
    assert "absolute" in _detail(submit_zip(client, user_token, absolute.getvalue()))["message"]

    linked = io.BytesIO()
    with zipfile.ZipFile(linked, "w") as archive:
        info = zipfile.ZipInfo("meta.json")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    assert "symbolic link" in _detail(submit_zip(client, user_token, linked.getvalue()))["message"]


def test_an_oversized_upload_is_refused(
    client: TestClient, job_dir: Path, user_token: str, assert_nothing_left: None
) -> None:
    big = zip_folder(job_dir) + b"\0" * (MAX_UPLOAD + 1)
    response = submit_zip(client, user_token, big)
    assert response.status_code == 413
    assert "max_upload_bytes" in response.json()["detail"]


def test_a_zip_bomb_is_refused(
    client: TestClient, job_dir: Path, user_token: str, assert_nothing_left: None
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("shards/site-1/zeros.bin", b"\0" * (MAX_UPLOAD + 1))
    response = submit_zip(
        client,
        user_token,
        zip_folder(job_dir),
        shards=("shards.zip", buffer.getvalue(), "application/zip"),
    )
    assert response.status_code == 413 and "unpacks" in response.json()["detail"]


class _Exploit:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("this ran on the server",))


def test_a_pickle_with_code_as_checkpoint_is_refused(
    client: TestClient, tmp_path: Path, user_token: str, assert_nothing_left: None
) -> None:
    import torch

    good = tmp_path / "warm.pt"
    torch.save({"w": torch.zeros(1)}, good)
    folder = job_spec(tmp_path, checkpoint=good).render(tmp_path / "ck")
    (folder / "model_checkpoint.pt").write_bytes(pickle.dumps({"w": _Exploit()}))
    detail = _detail(submit_zip(client, user_token, zip_folder(folder)))
    assert detail["file"] == "model_checkpoint.pt" and "weights_only" in detail["message"]


def test_a_checkpoint_upload_needs_meta_to_name_it(
    client: TestClient, job_dir: Path, user_token: str, assert_nothing_left: None
) -> None:
    response = submit_zip(client, user_token, zip_folder(job_dir), checkpoint=("w.pt", b"whatever"))
    assert _detail(response)["field"] == "model_checkpoint"


def test_a_shard_for_an_unknown_site_is_refused(
    client: TestClient, job_dir: Path, user_token: str, assert_nothing_left: None
) -> None:
    shard = zip_folder(job_dir / "shards" / "site-1")
    response = submit_zip(
        client,
        user_token,
        zip_folder(job_dir),
        shards=("site-9.zip", shard, "application/zip"),
    )
    detail = _detail(response)
    assert detail["file"] == "meta.json" and "site-9" in detail["message"]


def test_a_file_that_is_not_a_zip_is_refused(
    client: TestClient, user_token: str, assert_nothing_left: None
) -> None:
    detail = _detail(submit_zip(client, user_token, b"plain text"))
    assert detail == {"file": "job_zip", "field": "", "message": "not a zip file"}


def test_a_job_naming_unknown_sites_is_refused_naming_them(
    client: TestClient, tmp_path: Path, user_token: str, assert_nothing_left: None
) -> None:
    spec = job_spec(tmp_path, shards=False)
    spec.federation.sites = ["site-1", "site-9", "lab-x"]
    response = submit_zip(client, user_token, zip_folder(spec.render(tmp_path / "job")))

    assert response.status_code == 422
    detail = _detail(response)
    assert (detail["file"], detail["field"]) == ("meta.json", "sites")
    assert "not registered on this server: site-9, lab-x" in detail["message"]
    assert "registered: site-1, site-2" in detail["message"]


def test_a_secure_aggregation_job_with_two_sites_is_refused(
    client: TestClient, tmp_path: Path, user_token: str, assert_nothing_left: None
) -> None:
    """With two sites each could subtract its own update from the sum and read the other's.
    (The SDK refuses to render such a job; the files are edited by hand after rendering.)"""
    spec = job_spec(tmp_path, shards=False)
    spec.federation.sites = ["site-1", "site-2", "site-3"]
    spec.federation.min_clients = 2
    spec.federation.aggregator_path = "resonfl.fl.secagg.SecAggFedAvg"
    folder = spec.render(tmp_path / "job")
    meta = json.loads((folder / "meta.json").read_text())
    meta["sites"] = meta["deploy_map"]["app"] = ["site-1", "site-2"]
    (folder / "meta.json").write_text(json.dumps(meta))
    response = submit_zip(client, user_token, zip_folder(folder))

    assert response.status_code == 422
    detail = _detail(response)
    assert detail["file"] == "config_fed_server.json"
    assert "at least 3 sites" in detail["message"]
