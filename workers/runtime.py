"""Per-process state of the aggregator: settings, database, artifact store, dispatcher.

Task functions look it up by calling `server_runtime()`; `resonfl aggregator` installs it
before the worker starts, a bare `celery -A` run builds it from the environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from resonfl_server.backend.core.config import Settings, get_settings
from resonfl_server.backend.core.db import create_db_engine, make_session_factory
from resonfl_server.backend.storage import ArtifactStore
from resonfl_server.workers.dispatch import CeleryDispatcher
from resonfl.runner import WarmInit


@dataclass
class ServerRuntime:
    settings: Settings
    sessions: sessionmaker[Session]
    store: ArtifactStore
    dispatcher: CeleryDispatcher
    # a pre-started process for the next job's initial weights (`resonfl aggregator` sets it)
    warm_init: WarmInit | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerRuntime:
        engine = create_db_engine(settings.database_url)
        return cls(
            settings=settings,
            sessions=make_session_factory(engine),
            store=ArtifactStore(settings.data_dir),
            dispatcher=CeleryDispatcher(settings),
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session


_runtime: ServerRuntime | None = None


def install(runtime: ServerRuntime) -> None:
    global _runtime
    _runtime = runtime


def server_runtime() -> ServerRuntime:
    global _runtime
    if _runtime is None:
        _runtime = ServerRuntime.from_settings(get_settings())
    return _runtime
