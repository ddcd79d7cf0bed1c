"""The real app in process over a real SQLite file and artifact store (datasette-style: assert
on the HTML). The dispatcher only records, so no round ever runs here; tests/e2e runs them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from backend.app import create_app
from backend.core.config import Settings
from backend.core.migrate import upgrade_head
from backend.services import accounts

PASSWORD = "correct horse battery"


class RecordingDispatcher:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send_start(self, job_id: int) -> None:
        self.sent.append(("start", job_id))

    def send_train(self, site: str, job_id: int, round_num: int) -> None:
        self.sent.append(("train", site, job_id, round_num))

    def send_aggregate(self, job_id: int, round_num: int) -> None:
        self.sent.append(("aggregate", job_id, round_num))

    def send_cancel(self, job_id: int) -> None:
        self.sent.append(("cancel", job_id))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    url = f"sqlite:///{tmp_path / 'resonfl.db'}"
    upgrade_head(url)
    return Settings(
        environment="test",
        secret_key="web-test-secret",
        data_dir=tmp_path / "data",
        database_url=url,
    )


@pytest.fixture
def dispatcher() -> RecordingDispatcher:
    return RecordingDispatcher()


@pytest.fixture
def app(settings: Settings, dispatcher: RecordingDispatcher) -> Iterator[Any]:
    application = create_app(settings, dispatcher)
    yield application
    application.state.engine.dispose()


@pytest.fixture
def session(app: Any) -> Iterator[Session]:
    with app.state.session_factory() as db:
        yield db


@pytest.fixture
def admin(session: Session) -> Any:
    user, _ = accounts.create_user(session, "admin@example.org", PASSWORD, is_admin=True)
    return user


@pytest.fixture
def sites(session: Session) -> list[str]:
    for name in ("site-1", "site-2"):
        accounts.register_site(session, name)
    return ["site-1", "site-2"]


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def sign_in(client: TestClient, email: str = "admin@example.org", password: str = PASSWORD) -> str:
    """Sign in through the form; return the session's CSRF token."""
    page = client.get("/login")
    response = client.post(
        "/login",
        data={
            "email": email,
            "password": password,
            "next": "/jobs",
            "csrf_token": csrf_of(page.text),
        },
    )
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/jobs").text)


@pytest.fixture
def signed_in(client: TestClient, admin: Any) -> str:
    return sign_in(client)
