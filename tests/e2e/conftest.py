"""Browser tests: Playwright (sync) driving Debian's Chromium against the real platform —
uvicorn, the aggregator and two site workers as subprocesses, started by the same
`LocalPlatform` that `resonfl up` and tests/integration/platform use.

Never downloads a browser: /usr/bin/chromium (or RESONFL_CHROMIUM) or the tests skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import CHROMIUM, EMAIL, PASSWORD, chromium_context


def output_dir() -> Path:
    out = Path(os.environ.get("RESONFL_TEST_OUTPUT", "out/test-run"))
    (out / "screenshots").mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="session")
def screenshots() -> Path:
    return output_dir() / "screenshots"


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(
            f"no Chromium at {CHROMIUM} (apt-get install chromium; never `playwright install`)"
        )
    from resonfl_server.launcher.local import LocalPlatform
    from resonfl_server.launcher.supervise import free_port

    redis_url = _private_redis_db(os.environ.get("RESONFL_TEST_REDIS_URL"))
    plat = LocalPlatform(
        data_dir=tmp_path_factory.mktemp("e2e-platform"),
        port=free_port(),
        sites=2,
        redis_url=redis_url,
        secret_key="e2e-test-secret",
        heartbeat_s=1.0,
        heartbeat_timeout_s=8.0,
        reconcile_every_s=1.0,
        threads_per_job=1,
    )
    try:
        plat.start()
        _create_user(plat.database_url)
        yield plat
    finally:
        plat.stop()
        if redis_url:
            import redis

            redis.Redis.from_url(redis_url).flushdb()
        shutil.copytree(plat.log_dir, output_dir() / "e2e-platform-logs", dirs_exist_ok=True)


def _private_redis_db(base: str | None) -> str | None:
    """An empty db index on a shared Redis (other platforms in this run use theirs), or None
    for the embedded redis-server. Site queues are named after sites, so sharing a db with
    another platform's site-1 would cross their messages."""
    if not base:
        return None
    import random

    import redis

    root = base.rsplit("/", 1)[0] if base.count("/") > 2 else base
    for index in random.sample(range(1, 16), 15):
        url = f"{root}/{index}"
        if redis.Redis.from_url(url).dbsize() == 0:
            return url
    pytest.skip("no empty Redis db index on RESONFL_TEST_REDIS_URL")


def _create_user(database_url: str | None) -> None:
    from resonfl_server.backend.core.db import create_db_engine, make_session_factory
    from resonfl_server.backend.services import accounts

    engine = create_db_engine(str(database_url))
    with make_session_factory(engine)() as session:
        accounts.create_user(session, EMAIL, PASSWORD, is_admin=True)
    engine.dispose()


@pytest.fixture(scope="session")
def api_token(platform: Any) -> str:
    """An API token of the browser tests' user, for submitting through the SDK."""
    from sqlalchemy import select

    from resonfl_server.backend.core.db import create_db_engine, make_session_factory
    from resonfl_server.backend.models import User
    from resonfl_server.backend.services import accounts

    engine = create_db_engine(str(platform.database_url))
    try:
        with make_session_factory(engine)() as session:
            user = session.scalar(select(User).where(User.email == EMAIL))
            assert user is not None
            return accounts.create_token(session, user, "e2e-sdk")[1]
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Any]:
    """One Playwright driver for the whole run: its sync API refuses a second one started
    while the first is alive, so every browser context of every module comes from this."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(platform: Any, playwright_driver: Any) -> Iterator[Any]:
    with chromium_context(playwright_driver) as context:
        yield context


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    page = browser.new_page()
    page.set_default_timeout(30_000)
    yield page
    page.close()
