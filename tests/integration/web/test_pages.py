"""Sign-in, CSRF, auth redirects and the pages around the wizard."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from web_support import PASSWORD, csrf_of, sign_in


def test_pages_redirect_to_sign_in_when_signed_out(client: TestClient) -> None:
    for path in ("/jobs", "/jobs/new", "/sites", "/jobs/1"):
        response = client.get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next=")


def test_sign_in_with_a_wrong_password_shows_the_error(client: TestClient, admin: Any) -> None:
    token = csrf_of(client.get("/login").text)
    response = client.post(
        "/login", data={"email": "admin@example.org", "password": "nope", "csrf_token": token}
    )
    assert response.status_code == 400
    assert "Wrong email or password." in response.text
    assert 'value="admin@example.org"' in response.text


def test_sign_in_without_the_csrf_token_is_refused(client: TestClient, admin: Any) -> None:
    client.get("/login")
    response = client.post("/login", data={"email": "admin@example.org", "password": PASSWORD})
    assert response.status_code == 403
    assert "CSRF" in response.text


def test_a_post_with_a_forged_csrf_token_is_refused(client: TestClient, signed_in: str) -> None:
    response = client.post("/sites", data={"name": "site-9", "csrf_token": "forged"})
    assert response.status_code == 403
    assert client.get("/sites").text.count("site-9") == 0


def test_sign_in_then_out(client: TestClient, admin: Any) -> None:
    token = sign_in(client)
    assert client.get("/jobs").status_code == 200
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/jobs").status_code == 303


def test_sign_in_keeps_the_page_asked_for_but_not_another_host(
    client: TestClient, admin: Any
) -> None:
    token = csrf_of(client.get("/login?next=/sites").text)
    response = client.post(
        "/login",
        data={
            "email": "admin@example.org",
            "password": PASSWORD,
            "next": "//evil.example/x",
            "csrf_token": token,
        },
    )
    assert response.headers["location"] == "/jobs"


def test_a_tampered_session_cookie_is_not_signed_in(client: TestClient, signed_in: str) -> None:
    value = client.cookies.get("resonfl_session")
    assert value
    client.cookies.set("resonfl_session", value[:-2] + ("00" if value[-2:] != "00" else "11"))
    assert client.get("/jobs").status_code == 303


def test_admin_registers_a_site_and_sees_its_token_once(client: TestClient, signed_in: str) -> None:
    response = client.post("/sites", data={"name": "hospital-a", "csrf_token": signed_in})
    assert response.status_code == 201
    assert 'id="site-token">rfl_s_' in response.text
    again = client.get("/sites")
    assert "hospital-a" in again.text and "rfl_s_" not in again.text


def test_registering_a_bad_site_name_shows_the_error_beside_the_field(
    client: TestClient, signed_in: str
) -> None:
    response = client.post("/sites", data={"name": "bad name!", "csrf_token": signed_in})
    assert response.status_code == 422
    assert 'id="name-error"' in response.text and 'aria-invalid="true"' in response.text


def test_a_user_who_is_not_admin_cannot_register_sites(
    client: TestClient, session: Session, admin: Any
) -> None:
    from resonfl_server.backend.services import accounts

    accounts.create_user(session, "bob@example.org", PASSWORD)
    token = sign_in(client, "bob@example.org")
    assert "Register a site" not in client.get("/sites").text
    assert client.post("/sites", data={"name": "x1", "csrf_token": token}).status_code == 403


def test_static_htmx_is_served_locally(client: TestClient) -> None:
    response = client.get("/static/vendor/htmx-2.0.11.min.js")
    assert response.status_code == 200 and "htmx" in response.text[:2000]
    assert client.get("/static/app.css").status_code == 200


def test_every_input_on_the_wizard_pages_has_a_label(
    client: TestClient, signed_in: str, sites: list[str]
) -> None:
    import re

    from web_support import walk_to

    for step in ("model", "training", "federation", "data"):
        html = walk_to(client, signed_in, step).text
        ids = set(re.findall(r'<label[^>]*for="([^"]+)"', html))
        for match in re.finditer(r"<(input|select|textarea)\b([^>]*)>", html):
            attrs = match.group(2)
            if 'type="hidden"' in attrs or 'type="submit"' in attrs:
                continue
            input_id = re.search(r'id="([^"]+)"', attrs)
            assert input_id and input_id.group(1) in ids, f"{step}: unlabelled {match.group(0)}"


def test_sign_in_with_an_api_token(client: TestClient, session: Session) -> None:
    from resonfl_server.backend.services import accounts

    token = accounts.ensure_admin(session, "admin@localhost")
    csrf = csrf_of(client.get("/login").text)
    assert (
        client.post("/login", data={"token": "rfl_u_wrong", "csrf_token": csrf}).status_code == 400
    )
    response = client.post("/login", data={"token": token, "csrf_token": csrf})
    assert response.status_code == 303
    assert "admin@localhost" in client.get("/jobs").text


def test_the_sites_page_shows_each_sites_datasets_and_policy(
    client: TestClient, signed_in: str, session: Any, sites: list[str]
) -> None:
    from resonfl_server.backend.models import Site
    from resonfl_server.backend.services import accounts

    site = session.query(Site).filter_by(name="site-1").one()
    dataset = {"name": "chest-xray", "format": "image-folder", "description": "frontal scans",
               "samples": 120, "labels": {"normal": 80, "pneumonia": 40}}  # fmt: skip
    policy = {"submitters": ["alice@x.org"], "require_approval": True, "max_gpus": 1,
              "max_wall_time_s": 600.0, "network": False, "requirements": "off"}  # fmt: skip
    accounts.heartbeat(session, site, "idle", [], [dataset], policy)
    page = client.get("/sites").text
    assert 'data-dataset="chest-xray"' in page and "120 samples" in page
    assert "normal: 80, pneumonia: 40" in page and "frontal scans" in page
    assert "approval required" in page and "alice@x.org" in page and "≤ 10.0 min" in page
    assert page.count("none declared") == 1  # site-2 reported nothing
