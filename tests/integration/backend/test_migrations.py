"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from resonfl_server.backend.core.db import create_db_engine
from resonfl_server.backend.core.migrate import upgrade_head
from resonfl_server.backend.models import Base


def test_migrations_match_models(database_url: str) -> None:
    upgrade_head(database_url)
    upgrade_head(database_url)  # running it again is a no-op
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
