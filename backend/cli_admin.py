"""Administrative entry points for `resonfl up` and operators: migrate, first admin, sites."""

from __future__ import annotations

from resonfl_server.backend.core.config import Settings
from resonfl_server.backend.core.db import create_db_engine, make_session_factory
from resonfl_server.backend.core.migrate import upgrade_head
from resonfl_server.backend.services import accounts


def migrate(settings: Settings) -> None:
    upgrade_head(settings.database_url)


def ensure_admin(settings: Settings, email: str = "admin@localhost") -> str:
    """Create the admin if missing and return a fresh API token for it."""
    with _session(settings) as session:
        return accounts.ensure_admin(session, email)


def ensure_first_password(settings: Settings, email: str = "admin@localhost") -> str | None:
    """A one-time random web password for a user who has none (None if one is set)."""
    with _session(settings) as session:
        return accounts.ensure_first_password(session, email)


def set_password(settings: Settings, email: str, password: str) -> None:
    with _session(settings) as session:
        accounts.set_password(session, email, password)


def register_site(settings: Settings, name: str) -> str:
    """Register `name` (or give an existing site a new token) and return its site token."""
    with _session(settings) as session:
        return accounts.rotate_site_token(session, name)


def _session(settings: Settings):  # type: ignore[no-untyped-def]
    engine = create_db_engine(settings.database_url)
    return make_session_factory(engine)()
