"""requirements.txt for real, over real processes: two site workers whose policy is an
allow-list and whose only package source is a local find-links folder holding a wheel the
test builds itself (no internet). A job whose train function imports that package finishes;
a job asking for an unlisted package fails at start with the site's reason."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from wheel_support import build_wheel

from resonfl.client import Client
from resonfl.config import FederationConfig, ModelConfig
from resonfl.job import Job
from resonfl_server.launcher.local import LocalPlatform
from resonfl_server.launcher.supervise import free_port

pytestmark = pytest.mark.integration

USES_PACKAGE = '''
_train = fl_train_model


def fl_train_model(model, env, out_dir, logger):
    import resonfl_tinyext  # installed by the site from the job's requirements.txt

    result = _train(model, env, out_dir, logger)
    result["metrics"]["answer"] = float(resonfl_tinyext.ANSWER)
    return result
'''


@pytest.fixture(scope="module")
def req_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    # its own job store and broker (SQLite, embedded Redis): sharing the session platform's
    # would let that platform's site-1/site-2 workers take this platform's jobs and the other
    # way round (both run while this module does)
    wheels = tmp_path_factory.mktemp("wheels")
    build_wheel(wheels, "resonfl_tinyext", "0.3", "ANSWER = 42\n", requires=("torch>=2",))
    build_wheel(wheels, "resonfl_other", "1.0", "X = 1\n")
    plat = LocalPlatform(
        data_dir=tmp_path_factory.mktemp("req-platform"),
        port=free_port(),
        sites=2,
        secret_key="req-test-secret",
        heartbeat_s=1.0,
        reconcile_every_s=1.0,
        threads_per_job=1,
        worker_env={
            "RESONFL_REQUIREMENTS_POLICY": "allow-list",
            "RESONFL_REQUIREMENTS_ALLOW": "resonfl-tinyext",
            "RESONFL_REQUIREMENTS_FIND_LINKS": str(wheels),
            "RESONFL_REQUIREMENTS_NO_INDEX": "true",
        },
    )
    try:
        plat.start()
        yield plat
    finally:
        plat.stop()


def _job(tmp: Path, source: str, requirements: list[str], name: str) -> Job:
    sites = ["site-1", "site-2"]
    for site in sites:
        (tmp / "data" / site).mkdir(parents=True, exist_ok=True)
        (tmp / "data" / site / "note.txt").write_text("the tiny model makes its own data\n")
    return Job(
        name=name,
        model=ModelConfig(source=source),
        federation=FederationConfig(num_rounds=2, sites=sites),
        requirements=requirements,
        shards={s: tmp / "data" / s for s in sites},
    )


def _wait(plat: LocalPlatform, job_id: int, timeout_s: float = 300) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {plat.admin_token}"}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(f"{plat.url}/api/v1/jobs/{job_id}", headers=headers, timeout=30).json()
        if job["status"] in ("finished", "failed", "cancelled"):
            return dict(job)
        dead = plat.supervisor.dead()
        assert not dead, f"{dead[0].name} died:\n{plat.supervisor.tail(dead[0])}"
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not end in {timeout_s} s")


def test_a_job_imports_the_package_its_requirements_add(
    req_platform: LocalPlatform, tmp_path: Path, tiny_model_def: str
) -> None:
    job = _job(tmp_path, tiny_model_def + USES_PACKAGE, ["resonfl-tinyext==0.3"], "req-ok")
    job_id = Client(req_platform.url, req_platform.admin_token).submit(job)

    detail = _wait(req_platform, job_id)

    assert detail["status"] == "finished", detail["error"]
    assert detail["rounds"][-1]["metrics"]["answer"] == 42.0
    envs = {e["site"]: e for e in detail["environments"]}
    assert set(envs) == {"site-1", "site-2"}
    for env in envs.values():
        # torch, which the package requires, came from the platform: only the package itself
        assert env["packages"] == ["resonfl-tinyext==0.3"] and env["error"] is None
        assert env["seconds"] is not None and env["seconds"] > 0
    # each worker has its own data root, hence its own cache
    for site in ("site-1", "site-2"):
        cache = req_platform.data_dir / "sites" / site / "requirements-cache"
        assert any((p / "resonfl_tinyext").is_dir() for p in cache.iterdir() if p.is_dir())


def test_a_package_outside_the_allow_list_fails_the_job_at_start(
    req_platform: LocalPlatform, tmp_path: Path, tiny_model_def: str
) -> None:
    job = _job(tmp_path, tiny_model_def, ["resonfl_other"], "req-refused")
    job_id = Client(req_platform.url, req_platform.admin_token).submit(job)

    detail = _wait(req_platform, job_id)

    assert detail["status"] == "failed"
    assert "refuses resonfl_other: not in its allow-list" in detail["error"]
    assert all(r["status"] != "done" for r in detail["rounds"])
    errors = {e["site"]: e["error"] for e in detail["environments"]}
    assert "not in its allow-list" in errors["site-1"]


def test_a_model_def_importing_a_requirement_at_the_top_is_told_why_it_fails(
    req_platform: LocalPlatform, tmp_path: Path, tiny_model_def: str
) -> None:
    source = "import resonfl_tinyext  # only sites install it\n" + tiny_model_def
    job = _job(tmp_path, source, ["resonfl-tinyext==0.3"], "req-top-import")
    job_id = Client(req_platform.url, req_platform.admin_token).submit(job)

    detail = _wait(req_platform, job_id)

    assert detail["status"] == "failed"
    assert "No module named 'resonfl_tinyext'" in detail["error"]
    assert "import those packages inside the train function" in detail["error"]
