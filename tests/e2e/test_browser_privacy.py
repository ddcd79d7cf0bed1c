"""A finished DP-SGD job's page in the browser: the privacy chart plots each site's epsilon and
the job's (the worst site's, dashed), one line each. The job page's charts, the privacy chart
among them, are docs/img/privacy.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2e_support import sign_in
from resonfl.catalog import make_job
from resonfl.client import Client

pytestmark = pytest.mark.e2e

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
CHART = "Privacy budget spent (epsilon)"


def test_dp_sgd_job_page_plots_each_sites_epsilon_and_the_jobs(
    page: Any, platform: Any, api_token: str, tmp_path: Path
) -> None:
    client = Client(platform.url, api_token)
    job = make_job(
        "digits", sites=2, num_rounds=3, shards_dir=tmp_path / "shards", alpha=0.1,
        local_steps=2, job_name="digits-dp-sgd", optimizer="sgd", momentum=0.0, lr=1.0,
        batch_size=64, lr_schedule="constant", warmup_steps=0,
    )  # fmt: skip
    job.federation.aggregator_path = "resonfl.fl.dp_sgd.DPSGDFedAvg"
    job.federation.aggregator_args = {"target_epsilon": 8.0, "delta": 1e-5}
    job_id = client.submit(job)
    client.wait(job_id, progress=False, timeout=600)
    sign_in(page, platform.url)

    page.goto(f"{platform.url}/jobs/{job_id}")
    chart = page.locator("figure.chart").filter(has=page.locator(f"svg[aria-label='{CHART}']"))
    chart.wait_for()
    assert chart.locator("svg polyline").count() == 3  # site-1, site-2, the job
    assert chart.locator("svg polyline[stroke-dasharray]").count() == 1  # the job's line
    legend = chart.locator("ul.legend li").all_inner_texts()
    assert legend[:2] == ["site-1", "site-2"]
    assert legend[2].startswith("job (")
    assert chart.locator("svg circle").count() == 9  # three rounds a line
    charts = page.locator("div.charts").filter(has=chart)
    charts.scroll_into_view_if_needed()
    charts.screenshot(path=str(DOCS_IMG / "privacy.png"))
