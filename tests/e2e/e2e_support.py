"""Constants shared by the browser tests and their fixtures (a uniquely named module: every
test folder's `conftest` is a different module of the same name)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = os.environ.get("RESONFL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
EMAIL, PASSWORD = "e2e@example.org", "e2e password 123"


def sign_in(page: Any, base_url: str) -> None:
    """Open the jobs list, signing in through the form when the browser is signed out (tests
    share one browser profile, so whether it is depends on what ran before)."""
    page.goto(f"{base_url}/jobs")
    if "/login" in page.url:
        page.get_by_label("Email").fill(EMAIL)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_url(f"{base_url}/jobs")  # not **/jobs: /login?next=/jobs ends so too


def tab_until(page: Any, predicate: str, what: str, limit: int = 80) -> None:
    """Press Tab until `predicate` (a JS expression over `el`, the focused element) holds."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(
            f"(() => {{ const el = document.activeElement; return !!el && ({predicate}); }})()"
        ):
            return
    raise AssertionError(f"{what} is not reachable with Tab")


@contextmanager
def chromium_context(pw: Any) -> Iterator[Any]:
    """A fresh Chromium profile of its own (cookies included), closed and removed after."""
    profile = tempfile.mkdtemp(prefix="resonfl-chromium-")
    context = pw.chromium.launch_persistent_context(
        profile,
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        accept_downloads=True,
        viewport={"width": 1280, "height": 900},
    )
    try:
        yield context
    finally:
        context.close()
        shutil.rmtree(profile, ignore_errors=True)
