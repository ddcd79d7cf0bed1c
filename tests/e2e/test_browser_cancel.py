"""Cancel from the job page: a long job submitted with the SDK, its page opened, Cancel pressed
with the keyboard; the page shows "cancelled" in place (no reload), its poller stops, and the
sites stop training."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from e2e_support import sign_in, tab_until

pytestmark = pytest.mark.e2e

LIVE = "/live"


def test_cancel_from_the_job_page(
    platform: Any, page: Any, api_token: str, screenshots: Path, tmp_path: Path
) -> None:
    from resonfl.catalog import make_job
    from resonfl.client import Client

    job = make_job(
        "digits", ["site-1", "site-2"], num_rounds=1, shards_dir=tmp_path / "shards",
        split="iid", job_name="digits-cancel", local_steps=1_000_000,
    )  # fmt: skip
    with Client(platform.url, api_token) as client:
        job_id = client.submit(job)

    sign_in(page, platform.url)
    page.goto(f"{platform.url}/jobs/{job_id}")
    page.evaluate("window.__noReload = true")
    polls: list[str] = []  # requests for the live region
    answered: list[str] = []  # and their answers
    page.on("request", lambda r: polls.append(r.url) if r.url.endswith(LIVE) else None)
    page.on("response", lambda r: answered.append(r.url) if r.url.endswith(LIVE) else None)
    # both sites training: the cancel has a running job process to stop
    page.locator("#job-live tbody tr").first.locator(".badge.training").nth(1).wait_for(
        timeout=120_000
    )
    page.screenshot(path=screenshots / "11-job-long-running.png", full_page=True)

    # the keyboard reaches Cancel, and keeps it across a poll (htmx re-focuses it by its id)
    tab_until(page, "el.id === 'cancel-job'", "Cancel job")
    before = len(answered)
    deadline = time.monotonic() + 10
    while len(answered) == before:
        assert time.monotonic() < deadline, "the job page stopped polling while the job runs"
        page.wait_for_timeout(200)
    page.wait_for_timeout(300)  # the answer swapped in
    assert page.evaluate("document.activeElement.id") == "cancel-job", "a poll took the focus"
    page.keyboard.press("Enter")
    cancelled_at = time.monotonic()

    page.locator("#job-live[data-status='cancelled']").wait_for(timeout=15_000)
    assert page.evaluate("window.__noReload === true"), "the page reloaded"
    assert page.locator("#job-status").inner_text() == "cancelled"
    assert page.locator("#job-live").get_attribute("hx-trigger") is None
    assert page.locator("#cancel-job").count() == 0
    assert "cancelled by" in page.locator("#job-live .errors").inner_text()
    page.screenshot(path=screenshots / "12-job-cancelled.png", full_page=True)

    # the poller has stopped: no request for the live region in the next 5 s
    seen = len(polls)
    page.wait_for_timeout(5_000)
    assert len(polls) == seen, f"still polling after the job ended: {polls[seen:]}"
    assert page.evaluate("window.__noReload === true")

    # and both sites stopped training the cancelled job (the worker kills it within seconds)
    for site in ("site-1", "site-2"):
        log = platform.log_dir / f"worker-{site}.log"
        while f"stopped: job {job_id} is cancelled" not in log.read_text(errors="replace"):
            assert time.monotonic() - cancelled_at < 30, f"{site} kept training a cancelled job"
            time.sleep(0.5)
