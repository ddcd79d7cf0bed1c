"""`resonfl up` gives the first admin a one-time password; `set-password` changes it."""

from __future__ import annotations

import subprocess
import sys

from fastapi.testclient import TestClient

from resonfl_server.backend import cli_admin
from resonfl_server.backend.core.config import Settings
from web_support import sign_in


def test_the_first_admin_gets_one_password_that_signs_in(client: TestClient, settings: Settings) -> None:
    cli_admin.ensure_admin(settings, "first@localhost")

    password = cli_admin.ensure_first_password(settings, "first@localhost")

    assert password is not None
    assert cli_admin.ensure_first_password(settings, "first@localhost") is None  # shown once
    assert sign_in(client, "first@localhost", password)


def test_set_password_command_replaces_it_and_refuses_a_short_one(client: TestClient, settings: Settings) -> None:
    cli_admin.ensure_admin(settings, "ops@localhost")
    env = {"RESONFL_DATABASE_URL": settings.database_url, "RESONFL_SECRET_KEY": "x" * 32,
           "RESONFL_ENVIRONMENT": "test", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "resonfl.cli", "set-password", "ops@localhost", "--password"]

    short = subprocess.run([*cmd, "short"], env=env, capture_output=True, text=True, check=False)
    ok = subprocess.run([*cmd, "a-long-enough-one"], env=env, capture_output=True, text=True, check=False)

    assert short.returncode == 2 and "at least 8 characters" in short.stderr
    assert ok.returncode == 0, ok.stderr
    assert sign_in(client, "ops@localhost", "a-long-enough-one")
