"""A real app in process: real database (a SQLite file, and PostgreSQL when
RESONFL_TEST_POSTGRES_URL is set), real artifact store in tmp_path, migrations applied."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backend_support import MAX_UPLOAD, RecordingDispatcher, auth, job_spec
from pg_support import fresh_postgres_database
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from resonfl_server.backend.app import create_app
from resonfl_server.backend.core.config import Settings
from resonfl_server.backend.core.migrate import upgrade_head
from resonfl_server.backend.services import accounts


def _postgres_database() -> Iterator[str]:
    base = os.environ.get("RESONFL_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("RESONFL_TEST_POSTGRES_URL is not set")
    yield from fresh_postgres_database(base)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'resonfl.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    upgrade_head(database_url)
    return Settings(
        environment="test",
        secret_key="test-secret",
        data_dir=tmp_path / "data",
        database_url=database_url,
        max_upload_bytes=MAX_UPLOAD,
    )


@pytest.fixture
def dispatcher() -> RecordingDispatcher:
    return RecordingDispatcher()


@pytest.fixture
def app(settings: Settings, dispatcher: RecordingDispatcher) -> Iterator[Any]:
    application = create_app(settings, dispatcher)
    with application.state.session_factory() as db:
        for site in ("site-1", "site-2"):  # the sites job_spec names: jobs must name known sites
            accounts.register_site(db, site)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def session(app: Any) -> Iterator[Session]:
    with app.state.session_factory() as db:
        yield db


@pytest.fixture
def admin_token(session: Session) -> str:
    return accounts.ensure_admin(session, "admin@example.org")


@pytest.fixture
def user_token(client: TestClient, admin_token: str) -> str:
    response = client.post(
        "/api/v1/users", json={"email": "alice@example.org"}, headers=auth(admin_token)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


@pytest.fixture
def other_token(client: TestClient, admin_token: str) -> str:
    response = client.post(
        "/api/v1/users", json={"email": "bob@example.org"}, headers=auth(admin_token)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


@pytest.fixture
def site_tokens(client: TestClient, admin_token: str, session: Session) -> dict[str, str]:
    """Tokens of site-1 and site-2 (registered with the app) and of site-3, added by the API."""
    tokens = {name: accounts.rotate_site_token(session, name) for name in ("site-1", "site-2")}
    response = client.post("/api/v1/sites", json={"name": "site-3"}, headers=auth(admin_token))
    assert response.status_code == 201, response.text
    tokens["site-3"] = response.json()["token"]
    return tokens


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    return job_spec(tmp_path).render(tmp_path / "job")
