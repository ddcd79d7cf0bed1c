"""Day two: `resonfl migrate` (the real command, in a subprocess) upgrades a job store made by
the first release (migration 0001) with jobs, rounds and an API token in it, and the API of
this release reads every job back with the old token. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from backend_support import RecordingDispatcher, auth
from fastapi.testclient import TestClient

from resonfl_server.backend.app import create_app
from resonfl_server.backend.core.config import Settings
from resonfl_server.backend.core.db import create_db_engine
from resonfl_server.backend.core.migrate import alembic_config
from resonfl_server.backend.core.security import hash_token

OLD_TOKEN = "token-made-by-the-first-release"
NOW = "2026-11-20 03:00:00+00:00"


def seed_first_release(database_url: str) -> None:
    """Rows as the first release wrote them: raw SQL against the 0001 schema."""
    engine = create_db_engine(database_url)
    rows = [
        (
            "INSERT INTO users (id, email, password_hash, is_admin, created_at) "
            "VALUES (1, 'ops@example.org', NULL, true, :now)",
            {},
        ),
        (
            "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at) "
            "VALUES (1, 1, 'cli', :hash, :now)",
            {"hash": hash_token(OLD_TOKEN)},
        ),
    ]
    for job_id, status in ((1, "finished"), (2, "running"), (3, "failed")):
        rows.append(
            (
                "INSERT INTO jobs (id, owner_id, name, status, files, attachments, config, sites,"
                " num_rounds, min_clients, current_round, created_at, error) VALUES (:id, 1, :name,"
                ' :status, \'["meta.json"]\', \'{}\', \'{"meta": {"name": "old"}}\','
                ' \'["site-1", "site-2"]\', 2, 2, 1, :now, :error)',
                {
                    "id": job_id,
                    "name": f"old-job-{job_id}",
                    "status": status,
                    "error": "site-2 failed" if status == "failed" else None,
                },
            )
        )
        for number in (0, 1):
            timings = {
                "round_s": 1.5 + number,
                "min_results": 2,
                "metrics": {"train_loss": 0.5 / (number + 1)},
            }
            rows.append(
                (
                    "INSERT INTO rounds (id, job_id, number, status, timings) VALUES "
                    "(:rid, :id, :number, 'done', :timings)",
                    {
                        "rid": job_id * 10 + number,
                        "id": job_id,
                        "number": number,
                        "timings": json.dumps(timings),
                    },
                )
            )
    with engine.begin() as conn:
        for sql, params in rows:
            conn.execute(sa.text(sql), {"now": NOW, **params})
    engine.dispose()


def revision(database_url: str) -> str:
    engine = create_db_engine(database_url)
    with engine.connect() as conn:
        rev = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    return str(rev)


def test_resonfl_migrate_upgrades_a_first_release_store_and_the_api_reads_its_jobs(
    database_url: str, tmp_path: Path
) -> None:
    command.upgrade(alembic_config(database_url), "0001")
    seed_first_release(database_url)
    assert revision(database_url) == "0001"

    env = {
        **os.environ,
        "RESONFL_DATABASE_URL": database_url,
        "RESONFL_DATA_DIR": str(tmp_path / "data"),
    }
    done = subprocess.run(
        [str(Path(sys.executable).with_name("resonfl")), "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    head = alembic_config(database_url).get_main_option("script_location")
    assert revision(database_url) != "0001", f"still at 0001 ({head})"
    assert f"upgraded 0001 -> {revision(database_url)}" in done.stdout
    assert "@" not in done.stdout.split("job store")[1].split()[0], "printed a password"

    settings = Settings(
        environment="test", secret_key="s", data_dir=tmp_path / "data", database_url=database_url
    )
    app = create_app(settings, RecordingDispatcher())
    try:
        with TestClient(app) as client:
            listed = client.get("/api/v1/jobs", headers=auth(OLD_TOKEN))
            assert listed.status_code == 200, listed.text
            assert sorted(j["name"] for j in listed.json()["data"]) == [
                "old-job-1",
                "old-job-2",
                "old-job-3",
            ]
            job = client.get("/api/v1/jobs/1", headers=auth(OLD_TOKEN)).json()
            assert job["status"] == "finished" and job["sites"] == ["site-1", "site-2"]
            assert [r["number"] for r in job["rounds"]] == [0, 1]
            assert job["rounds"][1]["timings"]["round_s"] == 2.5
            assert job["rounds"][1]["metrics"] == {"train_loss": 0.25}
            failed = client.get("/api/v1/jobs/3", headers=auth(OLD_TOKEN)).json()
            assert failed["error"] == "site-2 failed"
    finally:
        app.state.engine.dispose()
