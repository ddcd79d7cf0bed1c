"""End to end over real processes: submit the digits job over HTTP, let two site workers
train it round by round, download the checkpoint and check it learned. Also: a site worker
SIGKILLed mid-round, and aggregate messages delivered many times."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import statistics
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from resonfl.catalog import make_job
from resonfl.job import Job
from resonfl_server.launcher.local import LocalPlatform
from resonfl_server.workers.dispatch import CeleryDispatcher

pytestmark = pytest.mark.integration

TERMINAL = ("finished", "failed", "cancelled")


# ------------------------------------------------------------------------------ helpers
def render_digits(folder: Path, num_rounds: int, local_steps: int = 60) -> Path:
    job = make_job(
        "digits", sites=2, num_rounds=num_rounds, shards_dir=folder / "shards",
        local_steps=local_steps,
    )
    job.render(folder)
    return folder


def submit(plat: LocalPlatform, job_dir: Path) -> int:
    """Through the SDK client when it is installed, else the same zip upload by hand."""
    try:
        from resonfl.client import Client
    except ImportError:
        Client = None
    if Client is not None:
        return int(Client(plat.url, plat.admin_token).submit(Job.load(job_dir)))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(job_dir.rglob("*")):
            if path.is_file() and path.name != "test.npz":
                zf.write(path, path.relative_to(job_dir).as_posix())
    resp = httpx.post(
        f"{plat.url}/api/v1/jobs", headers=auth(plat),
        files={"job_zip": ("job.zip", buf.getvalue(), "application/zip")}, timeout=60,
    )
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def auth(plat: LocalPlatform) -> dict[str, str]:
    return {"Authorization": f"Bearer {plat.admin_token}"}


def read_job(plat: LocalPlatform, job_id: int) -> dict[str, Any]:
    resp = httpx.get(f"{plat.url}/api/v1/jobs/{job_id}", headers=auth(plat), timeout=30)
    resp.raise_for_status()
    return dict(resp.json())


def wait_job(plat: LocalPlatform, job_id: int, timeout_s: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = read_job(plat, job_id)
        if job["status"] in TERMINAL:
            return job
        dead = plat.supervisor.dead()
        assert not dead, f"{dead[0].name} died:\n{plat.supervisor.tail(dead[0])}"
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {read_job(plat, job_id)['status']} after {timeout_s}s")


def top1(job_dir: Path, checkpoint: Path) -> float:
    """Load the checkpoint into the job's model class; accuracy on the held-out test set."""
    job = Job.load(job_dir)
    spec = importlib.util.spec_from_file_location("digits_model_def", job_dir / "model_def.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = getattr(module, job.model.class_name)(**job.model.args)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    model.eval()
    test = np.load(job_dir / "shards" / "test.npz")
    with torch.no_grad():
        pred = model(torch.as_tensor(test["X"]).float()).argmax(1).numpy()
    return float((pred == test["y"]).mean())


def report_timings(name: str, job: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [r["timings"] | {"round": r["number"]} for r in job["rounds"]]
    print(f"\n{name}: round  round_s  train_s(max site)  overhead_s  (in site task / between)")
    for t in rows:
        print(
            f"  {t['round']:>5}  {t['round_s']:7.2f}  {t['train_s_max']:17.2f}  "
            f"{t['overhead_s']:10.2f}  ({t['site_overhead_s']:.2f} / {t['transport_s']:.2f})"
        )
    print(
        f"  median round {statistics.median(t['round_s'] for t in rows):.2f}s, "
        f"overhead {statistics.median(t['overhead_s'] for t in rows):.2f}s"
    )
    out = os.environ.get("RESONFL_TEST_OUTPUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"round_timings_{name}.json").write_text(json.dumps(rows, indent=2))
    return rows


def aggregated_lines(plat: LocalPlatform, job_id: int) -> list[str]:
    text = (plat.log_dir / "aggregator.log").read_text(errors="replace")
    return [line for line in text.splitlines() if f"aggregated job {job_id} round" in line]


# ------------------------------------------------------------------------------ tests
def test_digits_job_runs_every_round_and_its_checkpoint_learned(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    job_dir = render_digits(tmp_path / "digits", num_rounds=3)
    job_id = submit(platform, job_dir)
    spam = DuplicateAggregates(platform, job_id)  # many extra deliveries of every aggregate
    spam.start()
    try:
        job = wait_job(platform, job_id)
    finally:
        spam.stop()

    assert job["status"] == "finished", job["error"]
    assert [r["number"] for r in job["rounds"]] == [0, 1, 2]
    assert all(r["status"] == "done" for r in job["rounds"])
    for n in range(3):
        resp = httpx.get(
            f"{platform.url}/api/v1/jobs/{job_id}/rounds/{n}/download", headers=auth(platform)
        )
        assert resp.status_code == 200, f"GLOBAL_MODEL_round_{n}: {resp.text[:200]}"
        assert torch.load(io.BytesIO(resp.content), weights_only=True)
    checkpoint = tmp_path / "checkpoint.pt"
    resp = httpx.get(f"{platform.url}/api/v1/jobs/{job_id}/download", headers=auth(platform))
    assert resp.status_code == 200
    checkpoint.write_bytes(resp.content)
    accuracy = top1(job_dir, checkpoint)
    print(f"\nheld-out top-1 after 3 rounds: {accuracy:.3f} (chance 0.1)")
    assert accuracy > 0.5

    assert spam.sent > 0
    lines = aggregated_lines(platform, job_id)
    assert len(lines) == 3, f"each round aggregated exactly once despite {spam.sent} extra messages"
    # round 0's time, as stored: the server's initial weights ran in the process the
    # aggregator started before the job came; each site says where its first round went
    init = job["init_phases"]
    assert init["warm"] is True and init["build_s"] >= 0 and init["total_s"] > 0, init
    for res in job["rounds"][0]["results"]:
        phases = res["phases"]
        assert phases["train_s"] > 0 and phases["process_s"] >= 0 and phases["data_s"] >= 0, res
        assert res["sandbox"]["mode"], res
        # the site started the job's process when told the job was starting (prepare), so
        # round 0 took it instead of starting one
        assert phases["started_process"] is False, res
    report_timings("e2e", job)


def test_a_site_worker_killed_mid_round_is_redispatched_and_no_round_is_lost(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    job_dir = render_digits(tmp_path / "digits", num_rounds=3)
    job_id = submit(platform, job_dir)

    victim = platform.workers["site-1"]
    wait_for_state(platform, job_id, round_num=1, site="site-1", state="training")
    os.kill(victim.proc.pid, signal.SIGKILL)  # the worker only, as a crash would
    victim.proc.wait(10)
    platform.supervisor.children.remove(victim)
    platform.start_worker("site-1")

    job = wait_job(platform, job_id)
    assert job["status"] == "finished", job["error"]
    assert [r["number"] for r in job["rounds"]] == [0, 1, 2]
    for rnd in job["rounds"]:
        assert rnd["status"] == "done"
        assert {(r["site"], r["status"]) for r in rnd["results"]} == {
            ("site-1", "done"), ("site-2", "done")
        }
    assert job["rounds"][1]["timings"]["redispatched"] == {"site-1": 1}
    ws = platform.data_dir / "jobs" / str(job_id)
    assert sorted(p.name for p in (ws / "files_out").glob("GLOBAL_MODEL_round_*.pt")) == [
        f"GLOBAL_MODEL_round_{n}.pt" for n in range(3)
    ]
    assert (ws / "model_out" / "checkpoint.pt").is_file()
    assert len(aggregated_lines(platform, job_id)) == 3
    report_timings("killed-worker", job)


def wait_for_state(
    plat: LocalPlatform, job_id: int, round_num: int, site: str, state: str, timeout_s: float = 300
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = read_job(plat, job_id)
        for rnd in job["rounds"]:
            if rnd["number"] == round_num:
                for res in rnd["results"]:
                    if res["site"] == site and res["status"] == state:
                        return
        assert job["status"] not in TERMINAL, job
        time.sleep(0.1)
    raise AssertionError(f"{site} never reached {state} in round {round_num}")


class DuplicateAggregates(threading.Thread):
    """Sends aggregate messages for the job's current round every 0.2 s while it runs:
    early ones must be ignored, late ones must find the round already claimed."""

    def __init__(self, plat: LocalPlatform, job_id: int) -> None:
        super().__init__(daemon=True)
        self.plat, self.job_id = plat, job_id
        self.dispatcher = CeleryDispatcher(str(plat.redis_url))
        self.stopped = threading.Event()
        self.sent = 0

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            try:
                job = read_job(self.plat, self.job_id)
            except httpx.HTTPError:
                continue
            if job["current_round"] is not None:
                for n in {job["current_round"], max(job["current_round"] - 1, 0)}:
                    self.dispatcher.send_aggregate(self.job_id, n)
                    self.sent += 1

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)


def test_cancelling_a_job_stops_the_sites_training_at_once(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    job_dir = render_digits(tmp_path / "long", num_rounds=1, local_steps=50_000)
    job_id = submit(platform, job_dir)
    wait_for_state(platform, job_id, 0, "site-1", "training")

    resp = httpx.post(f"{platform.url}/api/v1/jobs/{job_id}/cancel", headers=auth(platform), timeout=30)
    assert resp.status_code < 300, resp.text
    cancelled_at = time.monotonic()

    stopped = f"stopped: job {job_id} is cancelled"
    while stopped not in (platform.log_dir / "worker-site-1.log").read_text(errors="replace"):
        assert time.monotonic() - cancelled_at < 30, "site-1 kept training a cancelled job"
        time.sleep(0.5)
    assert read_job(platform, job_id)["status"] == "cancelled"


FAIL_SITE_2_IN_ROUND_1 = '''

import os as _os

_fl_train_model = fl_train_model


def fl_train_model(model, env, out_dir, logger):
    if _os.environ["SITE_NAME"] == "site-2" and _os.environ["CURRENT_ROUND"] == "1":
        raise RuntimeError("site-2 lost its disk")
    return _fl_train_model(model, env, out_dir, logger)
'''


def test_a_job_failed_by_another_site_releases_this_sites_job_process(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    job = make_job("digits", sites=2, num_rounds=3, shards_dir=tmp_path / "J" / "shards", local_steps=5)
    job.model.source += FAIL_SITE_2_IN_ROUND_1
    job_dir = job.render(tmp_path / "J")

    job_id = submit(platform, job_dir)
    final = wait_job(platform, job_id)

    assert final["status"] == "failed" and "site-2 lost its disk" in final["error"]
    released = f"released job {job_id}'s process: the job is failed"
    deadline = time.monotonic() + 30
    while released not in (platform.log_dir / "worker-site-1.log").read_text(errors="replace"):
        assert time.monotonic() < deadline, "site-1 kept the failed job's process"
        time.sleep(0.5)
