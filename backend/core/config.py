"""One `Settings` for the API, the workers and Alembic, read from `RESONFL_*` variables."""

from __future__ import annotations

import os

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET = "changethis"


class Settings(BaseSettings):
    """Server settings. Every field is `RESONFL_<NAME>` in the environment (or `.env`)."""

    model_config = SettingsConfigDict(
        env_prefix="RESONFL_",
        env_file=".env",
        extra="ignore",
        # Secrets as files (resonfl_secret_key, resonfl_database_url), not variables: see
        # docs/security.md. Variables still win, for a process that starts no job code.
        secrets_dir=os.environ.get("RESONFL_SECRETS_DIR") or None,
    )

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Field(
        default=Path("./data"), description="artifacts, job workspaces, SQLite file"
    )
    database_url: str = Field(
        default="", description="SQLAlchemy URL; empty means a SQLite file <data_dir>/resonfl.db"
    )
    redis_url: str | None = Field(
        default=None,
        description="Celery broker; None means the embedded redis-server of `resonfl up`",
    )
    secret_key: str = DEFAULT_SECRET
    max_upload_bytes: int = Field(
        default=512 * 1024 * 1024, gt=0, description="per request and per zip"
    )
    site_heartbeat_timeout_s: float = Field(default=60.0, gt=0)
    secure_cookies: bool | None = Field(
        default=None,
        description="mark the sign-in cookie Secure (HTTPS only); None: in production only",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="log every job's rounds to MLflow there (file://, http://)"
    )
    metrics_token: str | None = Field(
        default=None, description="bearer token /metrics asks for; None: /metrics is open"
    )

    @model_validator(mode="after")
    def _defaults_and_secret(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'resonfl.db').resolve()}"
        if self.secret_key == DEFAULT_SECRET and self.environment != "development":
            raise ValueError(
                f"RESONFL_SECRET_KEY is the default {DEFAULT_SECRET!r}; "
                f"set a real secret when RESONFL_ENVIRONMENT={self.environment}"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, for entry points (CLI, workers, Alembic), never for tests."""
    return Settings()
