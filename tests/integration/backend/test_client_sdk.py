"""The SDK's Client against the API served by a real uvicorn on a free port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from backend_support import job_spec, open_round

from resonfl.client import ApiError, Client


@pytest.fixture
def server_url(app: Any) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{url}/api/v1/health")
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def test_submit_a_job_object_follow_and_download(
    server_url: str, app: Any, tmp_path: Path, user_token: str
) -> None:
    client = Client(server_url, user_token)
    job_id = client.submit(job_spec(tmp_path))
    status = client.status(job_id)
    assert status["status"] == "queued" and set(status["attachments"]["shards"]) == {
        "site-1",
        "site-2",
    }
    assert [j["id"] for j in client.list_jobs()] == [job_id]

    open_round(app, job_id, 0, b"")
    app.state.store.global_model_path(job_id).write_bytes(b"final weights")
    app.state.store.global_model_path(job_id, 0).write_bytes(b"round 0")
    assert client.download(job_id, tmp_path / "out.pt").read_bytes() == b"final weights"
    assert (
        client.download(job_id, tmp_path, round=0).name == f"job-{job_id}-GLOBAL_MODEL_round_0.pt"
    )


def test_submit_a_folder_and_see_the_refusal(
    server_url: str, tmp_path: Path, user_token: str
) -> None:
    folder = job_spec(tmp_path).render(tmp_path / "job")
    (folder / "meta.json").write_text("[]")
    with pytest.raises(ApiError) as caught:
        Client(server_url, user_token).submit(folder)
    assert caught.value.status == 422 and caught.value.detail["file"] == "meta.json"


def test_wait_reports_a_cancelled_job(server_url: str, tmp_path: Path, user_token: str) -> None:
    from resonfl.client import JobFailed

    client = Client(server_url, user_token)
    job_id = client.submit(job_spec(tmp_path))
    client.cancel(job_id)
    with pytest.raises(JobFailed, match="cancelled"):
        client.wait(job_id, progress=False, poll_s=0.05, timeout=10)


def test_a_bad_token_raises_api_error(server_url: str) -> None:
    with pytest.raises(ApiError) as caught:
        Client(server_url, "rfl_u_wrong").list_jobs()
    assert caught.value.status == 401


def test_the_sdk_sees_unknown_sites_refused_at_submit(
    server_url: str, tmp_path: Path, user_token: str
) -> None:
    spec = job_spec(tmp_path, shards=False)
    spec.federation.sites = ["site-1", "site-7"]
    with pytest.raises(ApiError) as caught:
        Client(server_url, user_token).submit(spec)
    assert caught.value.status == 422
    assert "site-7" in caught.value.detail["message"]
    assert Client(server_url, user_token).list_jobs() == []


def test_a_sites_datasets_and_policy_reach_client_sites(
    server_url: str, tmp_path: Path, user_token: str, site_tokens: dict[str, str]
) -> None:
    from resonfl_server.workers.site.api import SiteAPI
    from resonfl_server.workers.site.config import SiteConfig, declare

    for label, n in (("cat", 3), ("dog", 1)):
        (tmp_path / "img" / label).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "img" / label / f"private-{i}.png").write_bytes(b"png")
    cfg = SiteConfig("site-2", site_tokens["site-2"], server_url, tmp_path)
    declare(cfg, None, [f"pets={tmp_path / 'img'}"], require_approval=True)
    api = SiteAPI(cfg)
    api.heartbeat("idle", [])
    api.close()
    sites = {s["name"]: s for s in Client(server_url, user_token).sites()}
    assert sites["site-2"]["datasets"] == [
        {"name": "pets", "format": "image-folder", "description": "", "samples": 4,
         "labels": {"cat": 3, "dog": 1}}
    ]  # fmt: skip
    assert sites["site-2"]["policy"]["require_approval"] is True
    assert sites["site-1"]["datasets"] == [] and sites["site-1"]["policy"] is None
    assert "private" not in str(sites)


def test_a_heartbeat_with_a_bad_dataset_report_is_refused_and_changes_nothing(
    server_url: str, user_token: str, site_tokens: dict[str, str]
) -> None:
    body = {"status": "idle", "datasets": [{"name": "x", "format": "npz", "samples": -1}]}
    headers = {"Authorization": f"Bearer {site_tokens['site-1']}"}
    response = httpx.post(f"{server_url}/api/v1/site/status", json=body, headers=headers)
    assert response.status_code == 422 and "samples" in response.text
    site = next(s for s in Client(server_url, user_token).sites() if s["name"] == "site-1")
    assert site["last_heartbeat"] is None and site["datasets"] == []
