"""Day two, over real processes (the session's platform: uvicorn, aggregator, two site
workers, Redis): a rolling restart of every server and site process while a job runs, and a
backup taken while the platform runs, restored into an empty deployment (SQLite and
PostgreSQL), from which an old job's checkpoint downloads byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pg_support import fresh_postgres_database
from test_platform_e2e import auth, read_job, render_digits, submit, wait_for_state, wait_job

from resonfl_server.backend.app import create_app
from resonfl_server.backend.core.config import Settings
from resonfl_server.launcher.local import LocalPlatform
from resonfl_server.launcher.supervise import Child, wait_for_port

pytestmark = pytest.mark.integration

RESONFL = str(Path(sys.executable).with_name("resonfl"))


# ------------------------------------------------------------------------------ helpers
def log_count(child: Child, needle: str) -> int:
    assert child.log_path is not None
    return child.log_path.read_text(errors="replace").count(needle)


def wait_log(child: Child, needle: str, more_than: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log_count(child, needle) > more_than:
            return
        assert child.proc.poll() is None, f"{child.name} exited: {child.proc.returncode}"
        time.sleep(0.2)
    raise AssertionError(f"{child.name} never logged {needle!r} again")


def restart_worker(plat: LocalPlatform, site: str) -> None:
    """SIGTERM (Celery's warm shutdown), start it again, wait until it consumes again."""
    old = plat.workers[site]
    before = log_count(old, " ready.")
    plat.supervisor.stop(old)
    wait_log(plat.start_worker(site), " ready.", before)


def restart_server_child(plat: LocalPlatform, name: str) -> Child:
    child = next(c for c in plat.supervisor.children if c.name == name)
    argv = list(child.proc.args)  # type: ignore[arg-type]
    plat.supervisor.stop(child)
    return plat.supervisor.start(name, argv, env=plat.server_env())


def finished_job(plat: LocalPlatform, tmp_path: Path) -> int:
    """A finished job of this session (another test's), or a new two-round one."""
    resp = httpx.get(f"{plat.url}/api/v1/jobs", headers=auth(plat), timeout=30)
    done = [j["id"] for j in resp.json()["data"] if j["status"] == "finished"]
    if done:
        return int(done[0])
    job_id = submit(plat, render_digits(tmp_path / "job", num_rounds=2))
    assert wait_job(plat, job_id)["status"] == "finished"
    return job_id


class NoDispatch:
    """The restored API is only read from here: nothing may be sent to a broker."""

    def send_start(self, job_id: int) -> None:
        raise AssertionError("nothing should start")

    send_train = send_aggregate = send_start  # type: ignore[assignment]


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RESONFL, *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


# ------------------------------------------------------------------------------ tests
def test_a_rolling_restart_of_sites_api_and_aggregator_mid_job_lets_the_job_finish(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    job_id = submit(platform, render_digits(tmp_path / "job", num_rounds=4, local_steps=80))
    wait_for_state(platform, job_id, round_num=1, site="site-1", state="training")
    restart_worker(platform, "site-1")
    restart_worker(platform, "site-2")
    api = restart_server_child(platform, "api")
    wait_for_port(platform.host, platform.port, 60, api)
    aggregator = restart_server_child(platform, "aggregator")
    assert read_job(platform, job_id)["status"] == "running", "restarts came too late to test"

    job = wait_job(platform, job_id)
    assert job["status"] == "finished", job["error"]
    assert [r["status"] for r in job["rounds"]] == ["done"] * 4
    assert aggregator.proc.poll() is None and api.proc.poll() is None
    resp = httpx.get(
        f"{platform.url}/api/v1/jobs/{job_id}/download", headers=auth(platform), timeout=60
    )
    assert resp.status_code == 200 and len(resp.content) > 1000


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The settings of a new deployment: an empty database and an empty data folder."""
    data = tmp_path / "restored"
    if request.param == "sqlite":
        yield {
            "RESONFL_DATABASE_URL": f"sqlite:///{data / 'resonfl.db'}",
            "RESONFL_DATA_DIR": str(data),
        }
        return
    base = os.environ.get("RESONFL_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("RESONFL_TEST_POSTGRES_URL is not set: no PostgreSQL to restore into")
    for url in fresh_postgres_database(base, prefix="resonfl_restore"):
        yield {"RESONFL_DATABASE_URL": url, "RESONFL_DATA_DIR": str(data)}


def test_a_live_backup_restores_into_an_empty_deployment_and_serves_old_checkpoints(
    platform: LocalPlatform, tmp_path: Path, empty_deployment: dict[str, str]
) -> None:
    job_id = finished_job(platform, tmp_path)
    original = httpx.get(
        f"{platform.url}/api/v1/jobs/{job_id}/download", headers=auth(platform), timeout=60
    ).content
    jobs_before = httpx.get(f"{platform.url}/api/v1/jobs", headers=auth(platform)).json()

    archive = tmp_path / "backup.tar"
    source = {
        "RESONFL_DATABASE_URL": str(platform.database_url),
        "RESONFL_DATA_DIR": str(platform.data_dir),
    }
    made = cli("backup", str(archive), env=source, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "backup written to" in made.stdout and archive.is_file()

    back = cli("restore", str(archive), env=empty_deployment, cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    again = cli("restore", str(archive), env=empty_deployment, cwd=tmp_path)
    assert again.returncode == 2 and "restore only into" in again.stderr

    settings = Settings(
        environment="test",
        secret_key="another-secret",
        database_url=empty_deployment["RESONFL_DATABASE_URL"],
        data_dir=Path(empty_deployment["RESONFL_DATA_DIR"]),
    )
    app = create_app(settings, NoDispatch())  # type: ignore[arg-type]
    try:
        with TestClient(app) as client:  # the old admin token still opens the restored store
            listed = client.get("/api/v1/jobs", headers=auth(platform)).json()
            assert [(j["id"], j["status"]) for j in listed["data"]] == [
                (j["id"], j["status"]) for j in jobs_before["data"]
            ]
            got = client.get(f"/api/v1/jobs/{job_id}/download", headers=auth(platform))
            assert got.status_code == 200, got.text
            assert got.content == original
            last = read_job(platform, job_id)["num_rounds"] - 1
            rnd = client.get(
                f"/api/v1/jobs/{job_id}/rounds/{last}/download", headers=auth(platform)
            )
            assert rnd.status_code == 200
    finally:
        app.state.engine.dispose()
