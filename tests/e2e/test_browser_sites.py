"""Data at the sites and site approval, in the browser: three site workers, each with its
own folder of PNG images (the `images` example's); two of them approve every job. A user
sees the datasets on the Sites page, submits `images` with "Data at the sites" from the
wizard; the job page says "awaiting approval at site-2, site-3" and follows, live, the
operators' `resonfl site approve` (site-2) and `resonfl site reject --reason` (site-3); the
job then trains on site-1 and site-2 and the checkpoint downloads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import CHROMIUM, EMAIL, PASSWORD, chromium_context, sign_in

pytestmark = pytest.mark.e2e
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture(scope="module")
def sites_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from resonfl.catalog import get_example
    from resonfl.catalog.shards import make_shards
    from resonfl_server.launcher.local import LocalPlatform
    from resonfl_server.launcher.supervise import free_port

    spec = {**get_example("images").dataset, "n_per_class": 24}
    data = make_shards(spec, tmp_path_factory.mktemp("images"), 3, split="iid", verbose=False)
    site_args = {site: ["--dataset", f"images={folder}"] for site, folder in data.items()}
    site_args["site-2"].append("--require-approval")
    site_args["site-3"].append("--require-approval")
    plat = LocalPlatform(
        data_dir=tmp_path_factory.mktemp("e2e-sites"),
        port=free_port(),
        sites=3,
        secret_key="e2e-sites-secret",
        heartbeat_s=1.0,
        heartbeat_timeout_s=8.0,
        reconcile_every_s=1.0,
        threads_per_job=1,
        site_args=site_args,
    )
    try:
        plat.start()
        _create_user(str(plat.database_url))
        yield plat
    finally:
        plat.stop()


def _create_user(database_url: str) -> None:
    from resonfl_server.backend.core.db import create_db_engine, make_session_factory
    from resonfl_server.backend.services import accounts

    engine = create_db_engine(database_url)
    with make_session_factory(engine)() as session:
        accounts.create_user(session, EMAIL, PASSWORD, is_admin=True)
    engine.dispose()


@pytest.fixture(scope="module")
def sites_page(sites_platform: Any, playwright_driver: Any) -> Iterator[Any]:
    with chromium_context(playwright_driver) as context:
        page = context.new_page()
        page.set_default_timeout(30_000)
        yield page


def site_cli(plat: Any, site: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RESONFL_SITE_TOKEN": plat.site_tokens[site], "RESONFL_API_URL": plat.url}
    return subprocess.run(
        [sys.executable, "-m", "resonfl_server.launcher", "site", *args],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip


def test_images_on_the_sites_data_with_approval_and_rejection_live(
    sites_platform: Any, sites_page: Any, tmp_path: Path
) -> None:
    plat, page = sites_platform, sites_page
    sign_in(page, plat.url)
    # -- the Sites page: every worker reported its own folder (counts, never file names)
    for _ in range(60):
        page.goto(f"{plat.url}/sites")
        if page.locator('[data-dataset="images"]').count() == 3:
            break
        page.wait_for_timeout(1000)
    assert page.locator('[data-dataset="images"]').count() == 3
    assert page.locator("td.policy .badge.warn").count() == 2  # site-2, site-3: approval
    assert ".png" not in page.content()
    page.screenshot(path=DOCS_IMG / "sites-datasets.png")

    # -- the wizard: images, Data at the sites (its default), every holder ticked
    page.goto(f"{plat.url}/jobs/new")
    page.get_by_label("Job name").fill("images-at-sites")
    page.get_by_label("Example", exact=True).select_option("images")
    page.get_by_role("button", name="Next →").click()
    page.get_by_label("Local steps per round").fill("4")
    page.get_by_role("button", name="Next →").click()
    page.get_by_label("Rounds").fill("2")
    page.get_by_label("Minimum sites per round").fill("2")
    for site in ("site-1", "site-2", "site-3"):
        page.locator(f"#site-{site}").check()
    page.get_by_role("button", name="Next →").click()
    assert page.locator("#mode-sites").is_checked()
    assert page.locator("#holders-summary").inner_text().startswith("3 site(s) hold images")
    for site in ("site-1", "site-2", "site-3"):
        assert page.locator(f"#holder__{site}").is_checked()
    page.screenshot(path=DOCS_IMG / "wizard-data-at-sites.png")
    page.get_by_role("button", name="Next →").click()
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url("**/jobs/*")
    job_id = page.url.rstrip("/").rsplit("/", 1)[1]
    page.evaluate("window.__noReload = true")

    # -- awaiting both operators, then live: site-2 approves, site-3 rejects with its reason
    awaiting = page.locator("#job-awaiting")
    assert "awaiting approval at site-2, site-3" in awaiting.inner_text()
    listed = site_cli(plat, "site-2", "jobs").stdout
    assert f"{job_id} " in listed and EMAIL in listed
    assert "===== model_def.py =====" in site_cli(plat, "site-3", "show", job_id).stdout
    site_cli(plat, "site-2", "approve", job_id, "--by", "ops-2")
    page.locator("#job-awaiting", has_text="awaiting approval at site-3").wait_for(timeout=15_000)
    assert "site-2," not in awaiting.inner_text()
    site_cli(plat, "site-3", "reject", job_id, "--reason", "no GPU time this week", "--by", "ops-3")
    page.locator("#site-decisions", has_text="no GPU time this week").wait_for(timeout=15_000)
    decisions = page.locator("#site-decisions").inner_text()
    assert "approved" in decisions and "ops-2" in decisions and "rejected" in decisions

    # -- it trains on site-1 and site-2 and finishes; the checkpoint downloads
    page.locator("#job-live[data-status='finished']").wait_for(timeout=600_000)
    assert page.evaluate("window.__noReload === true"), "the page reloaded"
    page.screenshot(path=DOCS_IMG / "job-approved-rejected.png")
    with page.expect_download() as download:
        page.locator("#download-final").click()
    target = tmp_path / "checkpoint.pt"
    download.value.save_as(target)
    assert target.stat().st_size > 10_000
