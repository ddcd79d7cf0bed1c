"""Constants shared by the browser tests and their fixtures (a uniquely named module: every
test folder's `conftest` is a different module of the same name)."""

from __future__ import annotations

import os

CHROMIUM = os.environ.get("RESONFL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
EMAIL, PASSWORD = "e2e@example.org", "e2e password 123"
