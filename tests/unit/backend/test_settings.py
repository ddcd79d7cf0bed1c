"""Settings: one source for API, workers and Alembic; no default secret in production."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from resonfl_server.backend.core.config import Settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test sets counts: no RESONFL_* from the caller, no .env file."""
    import os

    for name in list(os.environ):
        if name.startswith("RESONFL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_development_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url == f"sqlite:///{(tmp_path / 'resonfl.db').resolve()}"
    assert settings.redis_url is None
    assert settings.max_upload_bytes == 512 * 1024 * 1024


def test_the_default_secret_is_refused_outside_development() -> None:
    with pytest.raises(ValidationError, match="RESONFL_SECRET_KEY"):
        Settings(environment="production")
    assert Settings(environment="production", secret_key="s3cret").secret_key == "s3cret"


def test_settings_come_from_resonfl_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESONFL_DATABASE_URL", "postgresql+psycopg://db/resonfl")
    monkeypatch.setenv("RESONFL_MAX_UPLOAD_BYTES", "1024")
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://db/resonfl"
    assert settings.max_upload_bytes == 1024
