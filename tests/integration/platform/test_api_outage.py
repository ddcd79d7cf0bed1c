"""Issue 7, finding 4: a short API outage mid-round must not change a job's result.

Real processes: the session's platform (uvicorn, aggregator, two site workers, Redis). The
same stateful job (AdamW whose state persists across rounds, EMA) runs twice: undisturbed,
and with the API stopped for 5 s while the sites train round 1 (their state reports and
uploads meet a closed port, retry with backoff; a site the server gave up on meanwhile is
re-dispatched and re-runs the round from the client state snapshot of its start). Both
final checkpoints must be bit-identical.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import torch
from test_platform_e2e import auth, read_job, submit, wait_for_state, wait_job

from resonfl_server.launcher.local import LocalPlatform
from resonfl_server.launcher.supervise import wait_for_port
from resonfl.catalog import make_job

pytestmark = pytest.mark.integration

OUTAGE_S = 5.0


def render_stateful(folder: Path) -> Path:
    job = make_job(
        "digits",
        sites=2,
        num_rounds=3,
        shards_dir=folder / "shards",
        local_steps=150,
        optimizer="adamw",
        persist_optimizer_state=True,
        ema_decay=0.9,
    )
    return job.render(folder)


def checkpoint(plat: LocalPlatform, job_id: int) -> dict[str, torch.Tensor]:
    resp = httpx.get(f"{plat.url}/api/v1/jobs/{job_id}/download", headers=auth(plat), timeout=60)
    resp.raise_for_status()
    import io

    return dict(torch.load(io.BytesIO(resp.content), weights_only=True))


def stop_api_for(plat: LocalPlatform, seconds: float) -> None:
    """Stop the API process, keep the port closed `seconds`, start it again as it was."""
    api = next(c for c in plat.supervisor.children if c.name == "api")
    argv = list(api.proc.args)  # type: ignore[arg-type]
    plat.supervisor.stop(api)
    time.sleep(seconds)
    restarted = plat.supervisor.start("api", argv, env=plat.server_env())
    wait_for_port(plat.host, plat.port, 60, restarted)


def test_an_api_outage_mid_round_leaves_the_checkpoint_bit_identical(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    quiet = submit(platform, render_stateful(tmp_path / "quiet"))
    assert wait_job(platform, quiet)["status"] == "finished"
    expected = checkpoint(platform, quiet)

    job_id = submit(platform, render_stateful(tmp_path / "outage"))
    wait_for_state(platform, job_id, round_num=1, site="site-1", state="training")
    stop_api_for(platform, OUTAGE_S)
    job = wait_job(platform, job_id)
    assert job["status"] == "finished", job["error"]
    assert all(r["status"] == "done" for r in job["rounds"])

    got = checkpoint(platform, job_id)
    assert got.keys() == expected.keys()
    differing = [k for k in expected if not torch.equal(got[k], expected[k])]
    assert differing == [], f"differs from the undisturbed run in {differing[:5]}"
    retried = [
        line
        for name in ("site-1", "site-2")
        for line in (platform.log_dir / f"worker-{name}.log")
        .read_text(errors="replace")
        .splitlines()
        if f"/site/jobs/{job_id}/" in line and "attempt" in line
    ]
    assert retried, "no site request met the outage: the test did not test anything"
    assert read_job(platform, job_id)["rounds"][1]["status"] == "done"
