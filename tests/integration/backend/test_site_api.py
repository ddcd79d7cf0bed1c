"""What site workers reach with a site token, and how their updates are taken in."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from backend_support import auth, open_round, safetensors_bytes, submit_zip, zip_folder
from fastapi.testclient import TestClient


@pytest.fixture
def job_id(client: TestClient, app: Any, job_dir: Path, user_token: str) -> int:
    response = submit_zip(client, user_token, zip_folder(job_dir))
    assert response.status_code == 201, response.text
    job = int(response.json()["id"])
    open_round(app, job, 0, safetensors_bytes(0.5))
    return job


def _post_result(
    client: TestClient,
    token: str,
    job: int,
    data: bytes,
    sha: str | None = None,
    rnd: int = 0,
    **extra: Any,
) -> Any:
    meta = {
        "samples": 10,
        "metrics": {"val_acc": 0.9},
        "train_s": 1.5,
        "sha256": sha or hashlib.sha256(data).hexdigest(),
        "log": "trained\n",
        **extra,
    }
    return client.post(
        f"/api/v1/site/jobs/{job}/rounds/{rnd}/result",
        files={"weights": ("w.safetensors", data)},
        data={"meta": json.dumps(meta)},
        headers=auth(token),
    )


def test_a_site_outside_the_job_is_forbidden(
    client: TestClient, job_id: int, site_tokens: dict[str, str]
) -> None:
    outsider = auth(site_tokens["site-3"])
    for url in ("bundle", "shard", "rounds/0/weights"):
        assert client.get(f"/api/v1/site/jobs/{job_id}/{url}", headers=outsider).status_code == 403
    assert (
        _post_result(client, site_tokens["site-3"], job_id, safetensors_bytes()).status_code == 403
    )


def test_a_user_token_is_not_a_site_token(client: TestClient, job_id: int, user_token: str) -> None:
    assert (
        client.get(f"/api/v1/site/jobs/{job_id}/bundle", headers=auth(user_token)).status_code
        == 401
    )


def test_the_bundle_holds_the_job_and_only_this_sites_shard(
    client: TestClient, job_id: int, site_tokens: dict[str, str]
) -> None:
    response = client.get(f"/api/v1/site/jobs/{job_id}/bundle", headers=auth(site_tokens["site-1"]))
    assert response.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert "meta.json" in names and "model_def.py" in names
    assert "shards/site-1/train.txt" in names and "shards/site-2/train.txt" not in names


def test_the_shard_is_this_sites_data(
    client: TestClient, job_id: int, site_tokens: dict[str, str]
) -> None:
    response = client.get(f"/api/v1/site/jobs/{job_id}/shard", headers=auth(site_tokens["site-2"]))
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.read("train.txt") == b"data of site-2\n"


def test_round_weights_come_with_their_hash(
    client: TestClient, job_id: int, site_tokens: dict[str, str]
) -> None:
    response = client.get(
        f"/api/v1/site/jobs/{job_id}/rounds/0/weights", headers=auth(site_tokens["site-1"])
    )
    assert response.status_code == 200
    assert response.headers["X-Content-SHA256"] == hashlib.sha256(response.content).hexdigest()
    assert response.content == safetensors_bytes(0.5)
    later = client.get(
        f"/api/v1/site/jobs/{job_id}/rounds/1/weights", headers=auth(site_tokens["site-1"])
    )
    assert later.status_code == 404


def test_a_result_is_recorded_once_even_when_posted_twice(
    client: TestClient, job_id: int, site_tokens: dict[str, str], user_token: str
) -> None:
    data = safetensors_bytes(2.0)
    first = _post_result(client, site_tokens["site-1"], job_id, data)
    assert first.status_code == 200, first.text
    assert first.json()["duplicate"] is False
    second = _post_result(client, site_tokens["site-1"], job_id, data)
    assert second.status_code == 200 and second.json()["duplicate"] is True
    other = _post_result(client, site_tokens["site-1"], job_id, safetensors_bytes(3.0))
    assert other.status_code == 409
    job = client.get(f"/api/v1/jobs/{job_id}", headers=auth(user_token)).json()
    (result,) = job["rounds"][0]["results"]
    assert result["status"] == "done" and result["samples"] == 10
    assert result["metrics"] == {"val_acc": 0.9} and result["train_s"] == 1.5


def test_the_last_result_asks_for_aggregation(
    client: TestClient, job_id: int, site_tokens: dict[str, str], dispatcher: Any
) -> None:
    for site in ("site-1", "site-2"):
        assert (
            _post_result(client, site_tokens[site], job_id, safetensors_bytes()).status_code == 200
        )
    assert ("aggregate", job_id, 0) in dispatcher.calls


def test_non_safetensors_weights_are_refused(
    client: TestClient, app: Any, job_id: int, site_tokens: dict[str, str]
) -> None:
    import pickle

    data = pickle.dumps({"fc.weight": [1.0]})
    response = _post_result(client, site_tokens["site-1"], job_id, data)
    assert response.status_code == 422
    assert response.json()["detail"] == {
        "file": "weights",
        "field": "",
        "message": "not a safetensors file",
    }
    kinds = {a.kind for a in _artifacts(app)}
    assert "update" not in kinds


def test_a_wrong_hash_is_refused(
    client: TestClient, job_id: int, site_tokens: dict[str, str]
) -> None:
    response = _post_result(
        client, site_tokens["site-1"], job_id, safetensors_bytes(), sha="0" * 64
    )
    assert response.status_code == 422 and response.json()["detail"]["field"] == "sha256"


def test_a_result_for_a_round_not_open_is_refused(
    client: TestClient, job_id: int, site_tokens: dict[str, str]
) -> None:
    response = _post_result(client, site_tokens["site-1"], job_id, safetensors_bytes(), rnd=1)
    assert response.status_code == 409


def _artifacts(app: Any) -> list[Any]:
    from sqlalchemy import select

    from resonfl_server.backend.models import Artifact

    with app.state.session_factory() as db:
        return list(db.scalars(select(Artifact)))


# -- the site worker's upload: raw body streamed to the store, meta in a header ----------
def _post_raw(
    client: TestClient, token: str, job: int, data: bytes, meta: dict[str, Any] | None = None
) -> Any:
    meta = meta or {"samples": 10, "sha256": hashlib.sha256(data).hexdigest(), "train_s": 1.0}
    headers = {
        **auth(token),
        "Content-Type": "application/octet-stream",
        "X-Result-Meta": json.dumps(meta),
    }
    return client.post(f"/api/v1/site/jobs/{job}/rounds/0/result", content=data, headers=headers)


def _stored_files(app: Any) -> list[Path]:
    root = Path(app.state.store.artifacts)
    return [p for p in root.rglob("*") if p.is_file()]


def test_a_raw_upload_is_stored_once_with_its_hash(
    client: TestClient, app: Any, job_id: int, site_tokens: dict[str, str], user_token: str
) -> None:
    data = safetensors_bytes(2.0)
    first = _post_raw(client, site_tokens["site-1"], job_id, data)
    assert first.status_code == 200, first.text
    assert first.json()["sha256"] == hashlib.sha256(data).hexdigest()
    files = _stored_files(app)
    again = _post_raw(client, site_tokens["site-1"], job_id, data)  # a retried upload
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert _stored_files(app) == files  # the repeat's copy is not kept
    job = client.get(f"/api/v1/jobs/{job_id}", headers=auth(user_token)).json()
    (result,) = job["rounds"][0]["results"]
    assert result["status"] == "done" and result["samples"] == 10


def test_a_raw_upload_with_a_wrong_hash_leaves_nothing_behind(
    client: TestClient, app: Any, job_id: int, site_tokens: dict[str, str]
) -> None:
    before = _stored_files(app)
    data = safetensors_bytes()
    response = _post_raw(
        client, site_tokens["site-1"], job_id, data, {"samples": 1, "sha256": "0" * 64}
    )
    assert response.status_code == 422 and response.json()["detail"]["field"] == "sha256"
    assert _stored_files(app) == before
    assert list(Path(app.state.store.tmp).glob("*.part")) == []


def test_a_raw_upload_without_meta_is_named(
    client: TestClient, job_id: int, site_tokens: dict[str, str]
) -> None:
    response = client.post(
        f"/api/v1/site/jobs/{job_id}/rounds/0/result",
        content=safetensors_bytes(),
        headers={**auth(site_tokens["site-1"]), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 422
    assert response.json()["detail"]["file"] == "meta"
    other = client.post(
        f"/api/v1/site/jobs/{job_id}/rounds/0/result",
        content=b"{}",
        headers={**auth(site_tokens["site-1"]), "Content-Type": "application/json"},
    )
    assert other.status_code == 422 and other.json()["detail"]["file"] == "weights"


def test_a_results_phases_and_sandbox_are_stored_as_reported_and_shown_by_the_api(
    client: TestClient, job_id: int, site_tokens: dict[str, str], user_token: str
) -> None:
    phases = {"process_s": 2.5, "started_process": True, "data_s": 0.25, "train_s": 1.0}
    sandbox = {"confined": True, "mode": "auto", "network": False, "limits": {"memory_mb": 512}}
    response = _post_result(
        client, site_tokens["site-1"], job_id, safetensors_bytes(), phases=phases, sandbox=sandbox
    )
    assert response.status_code == 200, response.text
    job = client.get(f"/api/v1/jobs/{job_id}", headers=auth(user_token)).json()
    (result,) = job["rounds"][0]["results"]
    assert {k: v for k, v in result["phases"].items() if v is not None} == phases
    assert result["sandbox"] == sandbox


def test_a_bad_phase_is_named_and_records_nothing(
    client: TestClient, job_id: int, site_tokens: dict[str, str], user_token: str
) -> None:
    for phases, field in (({"train_s": -1.0}, "phases.train_s"), ({"warp_s": 1.0}, "phases.warp_s")):
        response = _post_result(
            client, site_tokens["site-1"], job_id, safetensors_bytes(), phases=phases
        )
        assert response.status_code == 422, response.text
        assert field in response.text
    job = client.get(f"/api/v1/jobs/{job_id}", headers=auth(user_token)).json()
    assert all(r["status"] != "done" for r in job["rounds"][0]["results"])
