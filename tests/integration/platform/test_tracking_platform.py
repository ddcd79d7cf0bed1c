"""Tracking over real processes: a digits job's TensorBoard events, written by the aggregator
as rounds finish, downloaded as a zip and read back with the `tensorboard` package's reader;
Prometheus `/metrics` scraped from the running API and parsed with prometheus-client's own
parser."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from resonfl.catalog import make_job
from resonfl.client import Client
from resonfl_server.launcher.local import LocalPlatform

pytestmark = pytest.mark.integration


def test_event_files_read_back_and_metrics_parse(platform: LocalPlatform, tmp_path: Path) -> None:
    job = make_job("digits", sites=2, num_rounds=2, shards_dir=tmp_path / "shards", local_steps=5)
    client = Client(platform.url, platform.admin_token)
    job_id = client.submit(job)
    finished = client.wait(job_id, progress=False, timeout=600)

    archive = client.download_tensorboard(job_id, tmp_path / "tb.zip")
    zipfile.ZipFile(io.BytesIO(archive.read_bytes())).extractall(tmp_path / "tb")
    root = tmp_path / "tb" / f"job-{job_id}-tensorboard"
    glob = EventAccumulator(str(root / "global"))
    glob.Reload()
    top1 = glob.Scalars("top1/global_model")
    assert [e.step for e in top1] == [0, 1]
    assert top1[1].value == pytest.approx(finished["rounds"][1]["metrics"]["global_top1"], rel=1e-6)
    scalars = set(glob.Tags()["scalars"])
    assert {"loss/train", "lr/end_of_round", "time/round_s", "time/overhead_s"} <= scalars
    for site in ("site-1", "site-2"):
        acc = EventAccumulator(str(root / "sites" / site))
        acc.Reload()
        assert [e.step for e in acc.Scalars("loss/train")] == [0, 1]
        assert "top1/local_model" in acc.Tags()["scalars"]

    # the same finished job, seen from Prometheus
    text = httpx.get(f"{platform.url}/metrics", timeout=30).text
    families = {f.name: f for f in text_string_to_metric_families(text)}

    jobs = {s.labels["state"]: s.value for s in families["resonfl_jobs"].samples}
    assert jobs["finished"] >= 1 and set(jobs) >= {"queued", "running", "failed", "cancelled"}
    assert families["resonfl_rounds_done"].samples[0].value >= 1
    rounds = families["resonfl_round_seconds"]
    assert rounds.type == "histogram"
    count = next(s.value for s in rounds.samples if s.name.endswith("_count"))
    inf = next(s.value for s in rounds.samples if s.labels.get("le") == "+Inf")
    assert count == inf >= 1
    assert families["resonfl_round_overhead_seconds"].type == "histogram"
    up = {s.labels["site"]: s.value for s in families["resonfl_site_up"].samples}
    assert up == {"site-1": 1.0, "site-2": 1.0}
    beats = families["resonfl_site_last_heartbeat_timestamp_seconds"].samples
    assert {s.labels["site"] for s in beats} == {"site-1", "site-2"}
    depth = {s.labels["site"] for s in families["resonfl_site_queue_depth"].samples}
    assert depth == {"site-1", "site-2"}
    uploads = {s.labels["kind"]: s.value for s in families["resonfl_upload_bytes"].samples}
    assert uploads["update"] > 0 and uploads["shard"] > 0
