"""Experiments on the pages, in process: the twin button of a job whose data lives only at
the sites is disabled and says why; "Clone with one change" opens the wizard with the job's
values; the compare page refuses fewer than two jobs, naming the field."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from resonfl.config import FederationConfig, ModelConfig, TrainingConfig
from resonfl.job import Job
from resonfl_server.backend.services import accounts


def _submit_without_shards(client: TestClient, session: Session, admin: Any, tmp: Path, source: str) -> int:
    folder = Job(
        name="site-data-only",
        model=ModelConfig(source=source),
        training=TrainingConfig(lr=0.02, local_steps=7),
        federation=FederationConfig(num_rounds=3, sites=["site-1", "site-2"]),
    ).render(tmp / "job")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in folder.rglob("*"):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    token = accounts.create_token(session, admin, "web-test")[1]
    response = client.post(
        "/api/v1/jobs", files={"job_zip": ("job.zip", buf.getvalue(), "application/zip")},
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_twin_button_is_disabled_with_the_reason_and_clone_copies_every_value(
    client: TestClient, session: Session, admin: Any, sites: list[str], signed_in: str,
    tmp_path: Path, tiny_model_def: str,
) -> None:  # fmt: skip
    job_id = _submit_without_shards(client, session, admin, tmp_path, tiny_model_def)

    page = client.get(f"/jobs/{job_id}").text
    assert 'id="run-twin" disabled' in page
    assert "the data lives only at the sites" in page
    assert client.post(f"/jobs/{job_id}/twin", data={"csrf_token": signed_in}).status_code == 303

    response = client.post(f"/jobs/{job_id}/clone", data={"csrf_token": signed_in})
    assert response.status_code == 303 and response.headers["location"].endswith("/training")
    training = client.get(response.headers["location"]).text
    assert 'value="0.02"' in training and 'value="7"' in training
    federation = client.get(response.headers["location"].replace("/training", "/federation")).text
    assert 'value="3"' in federation


def test_compare_needs_two_jobs(client: TestClient, signed_in: str) -> None:
    response = client.get("/compare?jobs=4")
    assert response.status_code == 422
    assert "compare 2 to 8 distinct jobs" in response.text
