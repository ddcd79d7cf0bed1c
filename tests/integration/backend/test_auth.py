"""Who may call what: tokens required, admins for admin things, users see their own jobs."""

from __future__ import annotations

from pathlib import Path

from backend_support import auth, submit_zip, zip_folder
from fastapi.testclient import TestClient


def test_endpoints_require_a_token(client: TestClient) -> None:
    for method, url in [
        ("get", "/api/v1/jobs"),
        ("post", "/api/v1/jobs"),
        ("get", "/api/v1/jobs/1"),
        ("get", "/api/v1/sites"),
        ("post", "/api/v1/tokens"),
        ("post", "/api/v1/site/status"),
        ("get", "/api/v1/site/jobs/1/bundle"),
    ]:
        response = getattr(client, method)(url)
        assert response.status_code == 401, (method, url, response.text)


def test_a_wrong_token_is_refused(client: TestClient) -> None:
    assert client.get("/api/v1/jobs", headers=auth("rfl_u_nonsense")).status_code == 401


def test_a_site_token_is_not_a_user_token(client: TestClient, site_tokens: dict[str, str]) -> None:
    assert client.get("/api/v1/jobs", headers=auth(site_tokens["site-1"])).status_code == 401


def test_only_admins_create_users_and_sites(client: TestClient, user_token: str) -> None:
    response = client.post(
        "/api/v1/users", json={"email": "x@example.org"}, headers=auth(user_token)
    )
    assert response.status_code == 403
    response = client.post("/api/v1/sites", json={"name": "s9"}, headers=auth(user_token))
    assert response.status_code == 403


def test_a_user_creates_more_tokens(client: TestClient, user_token: str) -> None:
    response = client.post("/api/v1/tokens", json={"name": "ci"}, headers=auth(user_token))
    assert response.status_code == 201
    new = response.json()["token"]
    me = client.get("/api/v1/users/me", headers=auth(new)).json()
    assert me["email"] == "alice@example.org"


def test_users_see_only_their_own_jobs_and_admins_see_all(
    client: TestClient, job_dir: Path, user_token: str, other_token: str, admin_token: str
) -> None:
    job_id = submit_zip(client, user_token, zip_folder(job_dir)).json()["id"]

    assert client.get(f"/api/v1/jobs/{job_id}", headers=auth(user_token)).status_code == 200
    assert client.get(f"/api/v1/jobs/{job_id}", headers=auth(other_token)).status_code == 404
    assert client.get(f"/api/v1/jobs/{job_id}/logs", headers=auth(other_token)).status_code == 404
    assert (
        client.get(f"/api/v1/jobs/{job_id}/download", headers=auth(other_token)).status_code == 404
    )
    assert (
        client.post(f"/api/v1/jobs/{job_id}/cancel", headers=auth(other_token)).status_code == 404
    )
    assert client.get("/api/v1/jobs", headers=auth(other_token)).json()["count"] == 0
    assert client.get(f"/api/v1/jobs/{job_id}", headers=auth(admin_token)).status_code == 200
    assert client.get("/api/v1/jobs", headers=auth(admin_token)).json()["count"] == 1


def test_sites_list_shows_registration_and_heartbeat(
    client: TestClient, site_tokens: dict[str, str], user_token: str
) -> None:
    gpus = [{"index": 0, "name": "H100", "memory_mb": 81559}]
    beat = client.post(
        "/api/v1/site/status",
        json={"status": "idle", "gpus": gpus},
        headers=auth(site_tokens["site-1"]),
    )
    assert beat.status_code == 200
    sites = {
        s["name"]: s for s in client.get("/api/v1/sites", headers=auth(user_token)).json()["data"]
    }
    assert sites["site-1"]["online"] is True and sites["site-1"]["gpus"] == gpus
    assert sites["site-2"]["online"] is False and sites["site-2"]["status"] == "registered"
    assert "token" not in sites["site-1"]
