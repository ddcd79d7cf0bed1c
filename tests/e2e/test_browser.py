"""A new user, in the browser alone: sign in, run the wizard with the digits example (a wrong
value tried in each step first), submit, watch the job finish without reloading, download
the checkpoint and load it as a state dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from e2e_support import EMAIL, PASSWORD

pytestmark = pytest.mark.e2e

FINISH_TIMEOUT_MS = 300_000


def _error_beside(page: Any, field: str) -> str:
    error = page.locator(f"#{field}-error")
    error.wait_for(state="visible")
    described = page.locator(f"#{field}").get_attribute("aria-describedby") or ""
    assert f"{field}-error" in described, f"#{field} does not point at its error"
    return str(error.inner_text())


def _next(page: Any) -> None:
    page.get_by_role("button", name="Next →").click()
    page.wait_for_load_state("domcontentloaded")


def test_sign_in_to_downloaded_checkpoint(
    platform: Any, page: Any, screenshots: Path, tmp_path: Path
) -> None:
    page.goto(f"{platform.url}/jobs")
    assert "/login" in page.url
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url("**/jobs")
    page.screenshot(path=screenshots / "01-jobs-empty.png", full_page=True)

    # -- Model: an empty name is refused beside the field
    page.get_by_role("link", name="New job").first.click()
    page.wait_for_url("**/model")
    page.get_by_label("Job name").fill("")
    _next(page)
    assert "name" in _error_beside(page, "name")
    page.get_by_label("Job name").fill("digits-browser")
    page.get_by_label("A catalog example").check()
    page.get_by_label("Example", exact=True).select_option("digits")
    page.screenshot(path=screenshots / "02-wizard-model.png", full_page=True)
    _next(page)

    # -- Training: a negative learning rate is refused; guidance follows the values
    page.wait_for_url("**/training")
    page.get_by_label("Learning rate").fill("-1")
    _next(page)
    assert "greater than 0" in _error_beside(page, "lr")
    page.get_by_label("Learning rate").fill("0.003")
    page.get_by_label("Local steps per round").fill("15")
    page.get_by_label("EMA decay", exact=True).fill("0.999")
    page.locator("#guidance").get_by_text("The EMA trap").wait_for()
    assert "0.999^15" in page.locator("#guidance").inner_text()
    page.get_by_label("EMA decay", exact=True).fill("")
    page.screenshot(path=screenshots / "03-wizard-training.png", full_page=True)
    _next(page)

    # -- Federation: more minimum sites than sites is refused
    page.wait_for_url("**/federation")
    page.get_by_label("Rounds").fill("2")
    page.get_by_label("Minimum sites per round").fill("5")
    _next(page)
    assert "exceeds" in _error_beside(page, "min_clients")
    page.get_by_label("Minimum sites per round").fill("")
    page.get_by_label("site-1").check()
    page.get_by_label("site-2").check()
    page.screenshot(path=screenshots / "04-wizard-federation.png", full_page=True)
    _next(page)

    # -- Data: a non-positive Dirichlet alpha is refused, then IID shards are generated
    page.wait_for_url("**/data")
    page.get_by_label("Split", exact=True).select_option("dirichlet")
    page.get_by_label("Dirichlet alpha").fill("0")
    _next(page)
    assert "greater than 0" in _error_beside(page, "alpha")
    page.get_by_label("Split", exact=True).select_option("iid")
    page.get_by_label("Dirichlet alpha").fill("0.5")
    page.screenshot(path=screenshots / "05-wizard-data.png", full_page=True)
    _next(page)

    # -- Review: six files, then Submit
    page.wait_for_url("**/review")
    assert page.locator("pre.code").count() == 6
    page.screenshot(path=screenshots / "06-wizard-review.png", full_page=True)
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url("**/jobs/*")

    # -- Job page: live updates until finished, no reload
    page.evaluate("window.__noReload = true")
    page.screenshot(path=screenshots / "07-job-running.png", full_page=True)
    page.locator("#job-live[data-status='finished']").wait_for(timeout=FINISH_TIMEOUT_MS)
    assert page.evaluate("window.__noReload === true"), "the page reloaded"
    assert page.locator("#job-status").inner_text() == "finished"
    assert page.locator("#job-live").get_attribute("hx-trigger") is None  # polling stopped
    page.locator("a[href$='/rounds/1/download']").wait_for()
    page.screenshot(path=screenshots / "08-job-finished.png", full_page=True)

    with page.expect_download() as info:
        page.get_by_role("link", name="Download final checkpoint").click()
    target = tmp_path / "checkpoint.pt"
    info.value.save_as(target)
    state = torch.load(target, map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and state
    assert all(isinstance(t, torch.Tensor) for t in state.values())

    href = page.locator("a[href$='/rounds/1/download']").get_attribute("href")
    response = page.request.get(f"{platform.url}{href}")
    assert response.ok
    (tmp_path / "round1.pt").write_bytes(response.body())
    round_state = torch.load(tmp_path / "round1.pt", map_location="cpu", weights_only=True)
    assert set(round_state) == set(state)

    page.get_by_role("link", name="Jobs", exact=True).click()
    page.wait_for_url("**/jobs")
    page.screenshot(path=screenshots / "09-jobs-list.png", full_page=True)
    page.goto(f"{platform.url}/sites")
    page.screenshot(path=screenshots / "10-sites.png", full_page=True)
