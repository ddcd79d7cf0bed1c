"""Submitting, reading, cancelling and downloading jobs."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from backend_support import auth, job_spec, open_round, safetensors_bytes, submit_zip, zip_folder
from fastapi.testclient import TestClient

from resonfl_server.backend.models import Job
from resonfl.job import JOB_FILES


def test_submit_a_zipped_job_folder(
    client: TestClient, app, job_dir: Path, user_token: str, dispatcher
) -> None:
    response = submit_zip(client, user_token, zip_folder(job_dir, prefix="tiny/"))
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["name"] == "tiny" and job["status"] == "queued"
    assert job["sites"] == ["site-1", "site-2"] and job["num_rounds"] == 2
    assert set(job["files"]) == set(JOB_FILES)
    assert set(job["attachments"]["shards"]) == {"site-1", "site-2"}
    assert ("start", job["id"]) in dispatcher.calls
    folder = app.state.store.job_folder(job["id"])
    assert (folder / "shards" / "site-2" / "train.txt").read_text() == "data of site-2\n"
    assert app.state.store.files_out(job["id"]).is_dir()


def test_submit_the_six_files_with_shard_zips(
    client: TestClient, app, job_dir: Path, user_token: str
) -> None:
    files = [(name, (name, (job_dir / name).read_bytes())) for name in JOB_FILES]
    for site in ("site-1", "site-2"):
        shard = zip_folder(job_dir / "shards" / site)
        files.append(("shards", (f"{site}.zip", shard, "application/zip")))
    response = client.post("/api/v1/jobs", files=files, headers=auth(user_token))
    assert response.status_code == 201, response.text
    folder = app.state.store.job_folder(response.json()["id"])
    assert (folder / "shards" / "site-1" / "train.txt").is_file()


def test_submit_with_a_safe_torch_checkpoint(
    client: TestClient, tmp_path: Path, user_token: str
) -> None:
    import torch

    ckpt = tmp_path / "warm.pt"
    torch.save({"fc.weight": torch.zeros(2, 4), "fc.bias": torch.zeros(2)}, ckpt)
    folder = job_spec(tmp_path, checkpoint=ckpt).render(tmp_path / "ck")
    response = submit_zip(client, user_token, zip_folder(folder))
    assert response.status_code == 201, response.text
    assert "checkpoint" in response.json()["attachments"]


def test_read_job_shows_rounds_and_site_results(
    client: TestClient, app, job_dir: Path, user_token: str, site_tokens: dict[str, str]
) -> None:
    job_id = submit_zip(client, user_token, zip_folder(job_dir)).json()["id"]
    open_round(app, job_id, 0, safetensors_bytes())
    client.post(
        f"/api/v1/site/jobs/{job_id}/rounds/0/state",
        json={"state": "training", "log": "epoch 1\n"},
        headers=auth(site_tokens["site-1"]),
    )
    job = client.get(f"/api/v1/jobs/{job_id}", headers=auth(user_token)).json()
    assert job["status"] == "running"
    assert job["rounds"][0]["number"] == 0 and job["rounds"][0]["status"] == "running"
    assert job["rounds"][0]["results"][0]["site"] == "site-1"
    assert job["rounds"][0]["results"][0]["status"] == "training"
    logs = client.get(f"/api/v1/jobs/{job_id}/logs", headers=auth(user_token)).json()
    assert logs["sites"]["site-1"][0]["log"] == "epoch 1\n"


def test_cancel_a_job(client: TestClient, job_dir: Path, user_token: str, dispatcher) -> None:
    job_id = submit_zip(client, user_token, zip_folder(job_dir)).json()["id"]
    response = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=auth(user_token))
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=auth(user_token))
    assert again.status_code == 409


def test_downloads_serve_the_persistor_files(
    client: TestClient, app, job_dir: Path, user_token: str
) -> None:
    job_id = submit_zip(client, user_token, zip_folder(job_dir)).json()["id"]
    assert (
        client.get(f"/api/v1/jobs/{job_id}/download", headers=auth(user_token)).status_code == 404
    )
    store = app.state.store
    store.global_model_path(job_id).write_bytes(b"final")
    store.global_model_path(job_id, 1).write_bytes(b"round one")
    final = client.get(f"/api/v1/jobs/{job_id}/download", headers=auth(user_token))
    assert final.status_code == 200 and final.content == b"final"
    per_round = client.get(f"/api/v1/jobs/{job_id}/rounds/1/download", headers=auth(user_token))
    assert per_round.content == b"round one"
    missing = client.get(f"/api/v1/jobs/{job_id}/rounds/7/download", headers=auth(user_token))
    assert missing.status_code == 404 and "round 7" in missing.json()["detail"]


def test_job_zip_keeps_only_the_job(
    client: TestClient, app, job_dir: Path, user_token: str
) -> None:
    data = zip_folder(job_dir)
    job_id = submit_zip(client, user_token, data).json()["id"]
    with app.state.session_factory() as db:
        assert db.get(Job, job_id).files["meta.json"] == (job_dir / "meta.json").read_text()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert "meta.json" in archive.namelist()
