"""The real app in process over a real SQLite file and artifact store (datasette-style: assert
on the HTML). The dispatcher only records, so no round ever runs here; tests/e2e runs them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from resonfl_server.backend.app import create_app
from resonfl_server.backend.core.config import Settings
from resonfl_server.backend.core.migrate import upgrade_head
from resonfl_server.backend.services import accounts
from web_support import PASSWORD, RecordingDispatcher, sign_in


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


@pytest.fixture
def signed_in(client: TestClient, admin: Any) -> str:
    return sign_in(client)
