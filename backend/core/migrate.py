"""Run the job store's Alembic migrations from code (`resonfl up`, the API container, tests)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

# The repository (editable install) or site-packages/resonfl_server (setup.py installs the
# migrations there); alembic.ini only exists in the former and is optional.
ROOT = Path(__file__).resolve().parents[2]


def alembic_config(database_url: str) -> Config:
    ini = ROOT / "alembic.ini"
    cfg = Config(str(ini)) if ini.is_file() else Config()
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["database_url"] = database_url
    return cfg


def current_revision(database_url: str) -> str | None:
    """The job store's schema revision, None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    from resonfl_server.backend.core.db import create_db_engine

    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade_head(database_url: str) -> None:
    """Bring the database at `database_url` to the newest schema (idempotent)."""
    # Alembic's per-plugin INFO lines drown `resonfl up`'s own output; warnings still show.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    command.upgrade(alembic_config(database_url), "head")
