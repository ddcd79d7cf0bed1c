"""Experiments on the pages, in process: the twin button of a job whose data lives only at
the sites is disabled and says why; "Clone with one change" opens the wizard with the job's
values; the compare page refuses fewer than two jobs, naming the field; the Requirements card
shows per site what was installed, or why not."""

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


def _submit_without_shards(
    client: TestClient, session: Session, admin: Any, tmp: Path, source: str,
    requirements: list[str] | None = None,
) -> int:  # fmt: skip
    folder = Job(
        name="site-data-only",
        model=ModelConfig(source=source),
        training=TrainingConfig(lr=0.02, local_steps=7),
        federation=FederationConfig(num_rounds=3, sites=["site-1", "site-2"]),
        requirements=requirements or [],
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


def test_the_requirements_card_shows_what_each_site_installed(
    app: Any, client: TestClient, session: Session, admin: Any, sites: list[str],
    signed_in: str, tmp_path: Path, tiny_model_def: str,
) -> None:  # fmt: skip
    job_id = _submit_without_shards(
        client, session, admin, tmp_path, tiny_model_def, requirements=["resonfl-tinyext==0.3"]
    )
    # what the two sites reported (POST /api/v1/site/jobs/{id}/environment writes these)
    store = app.state.store
    report = store.environment_report(job_id, "site-1")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(
        '{"packages": ["resonfl-tinyext==0.3"], "seconds": 1.5, "cached": false, "error": null}'
    )
    (report.parent / "site-2.json").write_text(
        '{"error": "site site-2 refuses resonfl-tinyext: not in its allow-list"}'
    )

    page = client.get(f"/jobs/{job_id}").text

    assert 'id="requirements-card"' in page and "resonfl-tinyext==0.3" in page
    row1 = page[page.index('id="env-site-1"'):page.index('id="env-site-2"')]
    assert "installed" in row1 and "1.5" in row1
    row2 = page[page.index('id="env-site-2"'):]
    assert "failed" in row2[:400] and "not in its allow-list" in row2[:600]
