"""At phone width (390 px) nothing overflows the screen sideways: the jobs list, the sites page
and a job page fit, and the rounds table keeps every site's column (it scrolls inside its card).
Screenshots at 390 px land in the test output's screenshots folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2e_support import sign_in

pytestmark = pytest.mark.e2e

PHONE = {"width": 390, "height": 844}


def _page_width_overflow(page: Any) -> int:
    """How many CSS pixels the document is wider than the screen (0 when it fits)."""
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


def test_jobs_sites_and_rounds_fit_a_390px_screen(
    platform: Any, page: Any, api_token: str, screenshots: Path, tmp_path: Path
) -> None:
    from resonfl.catalog import make_job
    from resonfl.client import Client

    # Prepare: a finished two-site job with a long name
    job = make_job(
        "digits", ["site-1", "site-2"], num_rounds=1, shards_dir=tmp_path / "shards",
        split="iid", job_name="digits-on-a-phone-with-a-rather-long-name", local_steps=2,
    )  # fmt: skip
    with Client(platform.url, api_token) as client:
        job_id = client.submit(job)
        client.wait(job_id, progress=False, timeout=300)
    sign_in(page, platform.url)
    page.set_viewport_size(PHONE)

    # Execute / Assert: each page fits, and says so in a screenshot
    for name, path in (("jobs", "/jobs"), ("sites", "/sites"), ("job", f"/jobs/{job_id}")):
        page.goto(f"{platform.url}{path}")
        page.wait_for_load_state("domcontentloaded")
        page.screenshot(path=screenshots / f"390px-{name}.png", full_page=True)
        assert _page_width_overflow(page) <= 0, f"{path} is wider than 390 px"

    # every site's column of the rounds table can be scrolled into view, inside the screen
    for site in ("site-1", "site-2"):
        header = page.locator("#job-live table thead th", has_text=site)
        header.scroll_into_view_if_needed()
        box = header.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
