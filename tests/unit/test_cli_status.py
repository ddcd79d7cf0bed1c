"""`resonfl status`: a short human summary of a job (the API's JSON stays behind --json)."""

from __future__ import annotations

from typing import Any

from resonfl.cli import status_summary


def _result(site: str, status: str, metrics: dict[str, Any], error: str | None = None) -> dict:
    return {"site": site, "status": status, "metrics": metrics, "error": error}


def test_summary_shows_state_rounds_last_metrics_per_site_and_the_error() -> None:
    job = {
        "id": 7,
        "name": "wine",
        "status": "failed",
        "num_rounds": 5,
        "sites": ["site-1", "site-2", "site-3"],
        "error": "round 2: 1 usable result(s), 2 needed",
        "rounds": [
            {"number": 0, "status": "done", "results": [
                _result("site-1", "done", {"top1": 0.5, "val_loss": 1.0}),
                _result("site-2", "done", {"top1": 0.4}),
            ]},
            {"number": 1, "status": "done", "results": [
                _result("site-1", "done", {"top1": 0.9, "val_loss": 0.25, "steps": 20}),
                _result("site-2", "failed", {}, "disk on fire"),
            ]},
        ],
    }  # fmt: skip

    lines = status_summary(job).splitlines()

    assert lines[0] == "job 7 'wine': failed, round 2/5"
    assert lines[1] == "  site-1: round 2 done: top1=0.9 val_loss=0.25"
    assert lines[2] == "  site-2: round 1 done: top1=0.4; round 2 failed: disk on fire"
    assert lines[3] == "  site-3: no result yet"
    assert lines[4] == "error: round 2: 1 usable result(s), 2 needed"
