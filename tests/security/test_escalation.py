"""Issue 7's findings 1 and 2 against the running platform (real API, aggregator, workers).

Finding 1: the aggregator builds the initial weights by running the job's persistor, which
imports the user's model_def.py; the code read /proc/<aggregator>/environ, found the secret
key and the database URL, and raised them into `job.error`, which its submitter reads.
Finding 2: on a site, job code read the worker's token (and, under `resonfl up`, the other
sites' tokens and the SQLite file) and reached the API and database ports.

Here the same code runs as a job; its report (what it reached) travels back in the job's
error, and must say: nothing.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from attacks import ATTACK
from conftest import PLATFORM_SECRET

from resonfl_server.launcher.local import LocalPlatform
from resonfl.catalog import make_job
from resonfl.cli import main as cli_main
from resonfl.runner.confine import Sandbox

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(Sandbox(mode="auto").problem() is not None, reason="no bubblewrap"),
]


def attack_config(plat: LocalPlatform) -> dict[str, Any]:
    data = plat.data_dir
    other_job = data / "sites" / "site-1" / "jobs" / "999" / "job" / "model_def.py"
    other_job.parent.mkdir(parents=True, exist_ok=True)
    other_job.write_text("another user's model")
    site_files = [data / "sites" / s / "worker-file.txt" for s in plat.site_names]
    for path in site_files:  # a file of each site worker, outside any job's folder
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the worker's own")
    markers = [PLATFORM_SECRET, *plat.site_tokens.values(), str(plat.database_url)]
    return {
        "markers": [m.encode().hex() for m in markers],
        "paths": [
            str(data / "resonfl.db"),
            str(data / "secrets"),
            *map(str, site_files),  # this site's and the other site's worker files
            str(other_job),  # another job's folder on this site
        ],
        "ports": [plat.port, int(str(plat.redis_url).rsplit(":", 1)[1].split("/")[0])],
    }


def attack_job(tmp_path: Path, plat: LocalPlatform, where: str) -> Path:
    cfg = attack_config(plat)
    if where == "server":  # at import: the persistor imports model_def.py on the server
        trigger = (
            "\nif 'SITE_NAME' not in _os.environ:\n"
            f"    raise RuntimeError('ATTACK ' + _json.dumps(attack({cfg!r})))\n"
        )
    else:  # in training, on a site
        trigger = (
            "\n_train = fl_train_model\n\n\ndef fl_train_model(model, env, out_dir, logger):\n"
            f"    raise RuntimeError('ATTACK ' + _json.dumps(attack({cfg!r})))\n"
        )
    job = make_job("digits", sites=2, num_rounds=1, shards_dir=tmp_path / "shards", local_steps=2)
    job.model.source += ATTACK + trigger
    return job.render(tmp_path / "job")


def run_job(plat: LocalPlatform, job_dir: Path) -> dict[str, Any]:
    from resonfl.client import Client
    from resonfl.job import Job

    job_id = Client(plat.url, plat.admin_token).submit(Job.load(job_dir))
    headers = {"Authorization": f"Bearer {plat.admin_token}"}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = httpx.get(f"{plat.url}/api/v1/jobs/{job_id}", headers=headers, timeout=30).json()
        if job["status"] in ("finished", "failed", "cancelled"):
            return dict(job)
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not end")


def report_in(error: str) -> dict[str, Any]:
    found = re.search(r"ATTACK (\{.*?\})", error)
    assert found, f"the attack's report is not in the job's error: {error[:800]}"
    return dict(json.loads(found.group(1)))


@pytest.mark.parametrize("where", ["server", "site"])
def test_job_code_reaches_no_secret_file_or_port(
    platform: LocalPlatform, tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    job = run_job(platform, attack_job(tmp_path, platform, where))

    assert job["status"] == "failed"
    report = report_in(job["error"])
    assert report == {"s": [], "p": 0, "f": [], "n": [], "u": 65534}
    # and so nothing of the server's own state reached the user through the error text
    for secret in (PLATFORM_SECRET, *platform.site_tokens.values(), str(platform.database_url)):
        assert secret not in job["error"]
    if where == "site":  # the round's log says which confinement and limits applied
        logs = httpx.get(
            f"{platform.url}/api/v1/jobs/{job['id']}/logs",
            headers={"Authorization": f"Bearer {platform.admin_token}"}, timeout=30,
        ).text
        assert '[sandbox] {\\"confined\\": true' in logs or '[sandbox] {"confined": true' in logs
        # and `resonfl status` shows those limits per site
        code = cli_main([
            "status", str(job["id"]), "--server", platform.url, "--token", platform.admin_token,
        ])  # fmt: skip
        out = capsys.readouterr().out
        assert code == 0
        assert "sandbox: confined (bubblewrap), no network, cpu_time_s=" in out, out


def test_no_process_that_starts_job_code_holds_a_secret_in_its_environment(
    platform: LocalPlatform,
) -> None:
    markers = [PLATFORM_SECRET, *platform.site_tokens.values(), str(platform.database_url)]
    for name in ("aggregator", *(f"worker-{s}" for s in platform.site_names)):
        child = next(c for c in platform.supervisor.children if c.name == name)
        environ = Path(f"/proc/{child.proc.pid}/environ").read_bytes().decode(errors="replace")
        assert not [m for m in markers if m in environ], name
