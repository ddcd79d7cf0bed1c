"""Experiments in the browser: "Clone with one change" (Review diffs the six files against the
original and warns when more than one setting changed), the compare page of the A/B pair
(shareable URL, curves overlaid, the one setting that differs, final metrics and their
difference) and the centralized twin's curves on the job page. Screenshots of the compare
page and the twin card go to docs/img/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2e_support import sign_in
from resonfl.catalog import make_job
from resonfl.client import Client

pytestmark = pytest.mark.e2e

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def _next(page: Any) -> None:
    page.get_by_role("button", name="Next →").click()
    page.wait_for_load_state("domcontentloaded")


def test_clone_one_change_compare_and_twin(
    page: Any, platform: Any, api_token: str, tmp_path: Path, screenshots: Path
) -> None:
    client = Client(platform.url, api_token)
    job = make_job(
        "digits", sites=2, num_rounds=3, shards_dir=tmp_path / "shards", alpha=0.1,
        local_steps=6, job_name="digits-a",
    )
    a = client.submit(job)
    client.wait(a, progress=False, timeout=600)
    sign_in(page, platform.url)

    # -- Clone with one change: every value copied, the wizard opens on Training
    page.goto(f"{platform.url}/jobs/{a}")
    page.get_by_role("button", name="Clone with one change").click()
    page.wait_for_url("**/training")
    assert page.get_by_label("Learning rate").input_value() == "0.003"
    page.get_by_label("Learning rate").fill("0.001")
    page.get_by_label("Batch size", exact=True).fill("16")
    _next(page)
    page.goto(page.url.rsplit("/", 1)[0] + "/review")
    review = page.locator("#clone-review")
    assert "2 setting(s) changed" in review.inner_text()
    assert "change one thing at a time" in page.locator("#one-change-warning").inner_text()

    # back to one change: the warning goes, the diff shows the one line
    page.goto(page.url.rsplit("/", 1)[0] + "/training")
    page.get_by_label("Batch size", exact=True).fill("32")
    _next(page)
    page.goto(page.url.rsplit("/", 1)[0] + "/review")
    assert "1 setting(s) changed" in page.locator("#clone-review").inner_text()
    assert page.locator("#one-change-warning").count() == 0
    assert "training.lr" in page.locator("#clone-changes").inner_text()
    diff = page.locator("pre[data-diff='config_fed_client.json']").inner_text()
    assert '-          "lr": 0.003,' in diff and '+          "lr": 0.001,' in diff
    page.screenshot(path=screenshots / "experiments-clone-review.png", full_page=True)
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url("**/jobs/*")
    b = int(page.url.rsplit("/", 1)[1])
    client.wait(b, progress=False, timeout=600)

    # -- Compare page, reached from job A's page, with its shareable URL
    page.goto(f"{platform.url}/jobs/{a}")
    page.locator("#compare-with").fill(str(b))
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_url(f"**/compare?jobs={a},{b}")
    settings = page.locator("#compare-settings").inner_text()
    assert "training.lr" in settings and "training.batch_size" not in settings
    assert page.locator("#compare-charts svg").count() == 3
    assert page.locator("#compare-charts svg polyline").count() >= 4  # 2 jobs x 2+ metrics
    final = page.locator("#compare-final").inner_text()
    assert "points" in final  # the top-1 difference
    page.screenshot(path=DOCS_IMG / "compare.png", full_page=True)

    # -- Centralized twin from job A's page; both curves and the gap once it finished
    page.goto(f"{platform.url}/jobs/{a}")
    page.get_by_role("button", name="Run centralized twin").click()
    page.wait_for_url(f"**/jobs/{a}")
    twin_id = int(page.locator("#twin-link").inner_text().lstrip("job #"))
    client.wait(twin_id, progress=False, timeout=600)
    page.reload()
    card = page.locator("#twin-card")
    card.locator("#twin-gap").wait_for()
    assert "points" in card.locator("#twin-gap").inner_text()
    assert card.locator("svg").count() == 3  # top-1, val loss, share of the gap closed
    assert card.locator("svg polyline").count() == 6  # FL and centralized per metric, 2 shares
    card.screenshot(path=str(DOCS_IMG / "twin.png"))
