"""Alembic environment: the URL comes from the same Settings as the API and the workers.

A caller may pass a URL in `config.attributes["database_url"]` (tests, `resonfl up`); else
`Settings().database_url` is used.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from resonfl_server.backend.core.config import Settings
from resonfl_server.backend.core.db import create_db_engine
from resonfl_server.backend.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("database_url")
    return str(url) if url else Settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_db_engine(_url())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection: Connection) -> None:
    # SQLite: batch mode alters a table by copying it and dropping the old one; with foreign
    # keys enforced, that drop deletes (ON DELETE CASCADE) every child row, e.g. a downgrade
    # that drops a jobs column would empty rounds. Off while migrating (outside a transaction,
    # where the pragma takes effect), checked and back on after.
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()  # end SQLAlchemy's autobegun transaction; alembic opens its own
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    try:
        with context.begin_transaction():
            context.run_migrations()
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
    if sqlite:
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        connection.commit()
        if broken:
            raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: {broken[:5]}")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
