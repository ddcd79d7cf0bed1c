"""A whole platform for the attacks: API, aggregator and two site workers as real processes,
started by `LocalPlatform` (what `resonfl up` runs) on a SQLite file and the embedded Redis,
so the database file sits in the data folder where a job could look for it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from resonfl_server.launcher.local import LocalPlatform
from resonfl_server.launcher.supervise import free_port

PLATFORM_SECRET = "platform-secret-key-4c9e"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    plat = LocalPlatform(
        data_dir=tmp_path_factory.mktemp("security-platform"),
        port=free_port(),
        sites=2,
        secret_key=PLATFORM_SECRET,
        heartbeat_s=1.0,
        heartbeat_timeout_s=8.0,
        reconcile_every_s=1.0,
        threads_per_job=1,
    )
    try:
        plat.start()
        yield plat
    finally:
        plat.stop()
        out = os.environ.get("RESONFL_TEST_OUTPUT")
        if out:
            shutil.copytree(plat.log_dir, Path(out) / "security-platform-logs", dirs_exist_ok=True)
