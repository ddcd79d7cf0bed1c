"""The authorization matrix over EVERY route of the OpenAPI schema: who may call it.

A new route fails `test_every_route_has_a_row` until it gets a row here, so nobody adds an
endpoint without deciding who may call it. Rows: ``public`` (no token), ``user`` (any user
token; ownership of jobs is tested in test_auth.py), ``admin`` (user tokens of admins only),
``site`` (site tokens only). Each row is then checked with four principals: no token, a site
token, a non-admin user's token and an admin's token.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from backend_support import auth, submit_zip, zip_folder
from fastapi.testclient import TestClient

MATRIX: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/health"): "public",
    ("POST", "/api/v1/jobs"): "user",
    ("GET", "/api/v1/jobs"): "user",
    ("GET", "/api/v1/jobs/{job_id}"): "user",
    ("POST", "/api/v1/jobs/{job_id}/cancel"): "user",
    ("POST", "/api/v1/jobs/{job_id}/twin"): "user",
    ("GET", "/api/v1/jobs/{job_id}/twin"): "user",
    ("GET", "/api/v1/jobs/{job_id}/logs"): "user",
    ("GET", "/api/v1/jobs/{job_id}/tensorboard"): "user",
    ("GET", "/api/v1/jobs/{job_id}/download"): "user",
    ("GET", "/api/v1/jobs/{job_id}/rounds/{round_num}/download"): "user",
    ("GET", "/api/v1/sites"): "user",
    ("GET", "/api/v1/compare"): "user",
    ("POST", "/api/v1/sites"): "admin",
    ("POST", "/api/v1/users"): "admin",
    ("GET", "/api/v1/users/me"): "user",
    ("POST", "/api/v1/tokens"): "user",
    ("POST", "/api/v1/site/status"): "site",
    ("GET", "/api/v1/site/jobs/{job_id}"): "site",
    ("GET", "/api/v1/site/jobs/{job_id}/bundle"): "site",
    ("GET", "/api/v1/site/jobs/{job_id}/files"): "site",
    ("GET", "/api/v1/site/approvals"): "site",
    ("POST", "/api/v1/site/jobs/{job_id}/approve"): "site",
    ("POST", "/api/v1/site/jobs/{job_id}/reject"): "site",
    ("GET", "/api/v1/site/jobs/{job_id}/shard"): "site",
    ("GET", "/api/v1/site/jobs/{job_id}/rounds/{round_num}/weights"): "site",
    ("POST", "/api/v1/site/jobs/{job_id}/rounds/{round_num}/state"): "site",
    ("POST", "/api/v1/site/jobs/{job_id}/rounds/{round_num}/result"): "site",
    ("POST", "/api/v1/site/jobs/{job_id}/environment"): "site",
    ("GET", "/api/v1/site/jobs/{job_id}/rounds/{round_num}/secagg"): "site",
    ("POST", "/api/v1/site/jobs/{job_id}/rounds/{round_num}/secagg/keys"): "site",
    ("POST", "/api/v1/site/jobs/{job_id}/rounds/{round_num}/secagg/shares"): "site",
    ("POST", "/api/v1/site/jobs/{job_id}/rounds/{round_num}/secagg/unmask"): "site",
}

# Expected status class per (row, principal): "ok" = neither 401 nor 403.
EXPECTED = {
    "public": {"anonymous": "ok", "site": "ok", "user": "ok", "admin": "ok"},
    "user": {"anonymous": 401, "site": 401, "user": "ok", "admin": "ok"},
    "admin": {"anonymous": 401, "site": 401, "user": 403, "admin": "ok"},
    "site": {"anonymous": 401, "site": "ok", "user": 401, "admin": 401},
}


def _routes(client: TestClient) -> set[tuple[str, str]]:
    schema = client.get("/api/v1/openapi.json").json()
    return {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_route_has_a_row(client: TestClient) -> None:
    routes = _routes(client)

    missing = sorted(routes - set(MATRIX))
    assert not missing, f"decide who may call these, add them to MATRIX: {missing}"
    assert not sorted(set(MATRIX) - routes), "MATRIX rows for routes that are gone"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_each_route_answers_each_principal_as_its_row_says(
    client: TestClient,
    job_dir: Path,
    user_token: str,
    admin_token: str,
    site_tokens: dict[str, str],
) -> None:
    job_id = submit_zip(client, user_token, zip_folder(job_dir)).json()["id"]
    tokens = {
        "anonymous": None,
        "site": site_tokens["site-1"],
        "user": user_token,
        "admin": admin_token,
    }
    wrong = []
    for (method, template), row in sorted(MATRIX.items()):
        url = template.format(job_id=job_id, round_num=0)
        for principal, token in tokens.items():
            headers = auth(token) if token else {}
            status = client.request(method, url, headers=headers).status_code
            expected = EXPECTED[row][principal]
            if expected == "ok" and status in (401, 403) or expected != "ok" and status != expected:
                wrong.append(f"{method} {template} as {principal}: {status}, expected {expected}")
    assert not wrong, "\n".join(wrong)
