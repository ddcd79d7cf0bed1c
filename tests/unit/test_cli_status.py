"""`resonfl status`: a short human summary of a job (the API's JSON stays behind --json)."""

from __future__ import annotations

from typing import Any

from resonfl.cli import sandbox_by_site, status_summary


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


def test_summary_shows_the_sandbox_each_site_applied_in_its_latest_reported_round() -> None:
    limits = {
        "memory_mb": 1024,
        "processes": 64,
        "open_files": 4096,
        "cpu_time_s": 60,
        "output_mb": 16,
    }
    confined = {"confined": True, "mode": "require", "network": False, "limits": limits}
    unconfined = {"confined": False, "mode": "off", "network": True}
    job = {"id": 1, "name": "j", "status": "running", "num_rounds": 2,
           "sites": ["site-1", "site-2", "site-3"], "rounds": [
               {"number": 1, "status": "running", "results": [
                   _result("site-1", "done", {}) | {"sandbox": confined},
                   # printed by job code into its log: not the stored field, never shown
                   _result("site-2", "training", {}) | {"log": '[sandbox] {"confined": true}'},
               ]},
               {"number": 0, "status": "done", "results": [
                   _result("site-1", "done", {}) | {"sandbox": unconfined},
                   _result("site-2", "done", {}) | {"sandbox": unconfined},
                   _result("site-3", "failed", {}, "no data") | {"sandbox": None},
               ]},
           ]}  # fmt: skip

    sandbox = sandbox_by_site(job)
    lines = status_summary(job, sandbox).splitlines()

    assert sandbox["site-1"] == confined  # round 1's, not round 0's
    assert "site-3" not in sandbox
    assert lines[2] == (
        "    sandbox: confined (bubblewrap), no network, cpu_time_s=60, memory_mb=1024, "
        "open_files=4096, output_mb=16, processes=64"
    )
    assert lines[4] == "    sandbox: NOT confined (mode off): job code ran unsandboxed"
    assert lines[5] == "  site-3: round 1 failed: no data"


def test_summary_says_where_round_0_spent_its_time() -> None:
    phases = {"process_s": 2.345, "started_process": True, "data_s": 0.25, "train_s": 1.5}
    job = {"id": 3, "name": "j", "status": "running", "num_rounds": 2, "sites": ["site-1"],
           "init_phases": {"total_s": 0.8, "process_s": 0.05, "build_s": 0.5, "warm": True},
           "rounds": [{"number": 0, "status": "done", "results": [
               _result("site-1", "done", {}) | {"phases": phases}]}]}  # fmt: skip

    lines = status_summary(job).splitlines()

    assert lines[2:] == [
        "round 0, where the time went:",
        "  initial weights (server): 0.80s: process start 0.05s, model build 0.50s, warm process",
        "  site-1: process start 2.35s, data load 0.25s, first train 1.50s, "
        "process started for it",
    ]


def test_status_says_which_sites_it_awaits_and_who_decided() -> None:
    job = {
        "id": 4, "name": "images", "status": "queued", "num_rounds": 2, "sites": ["site-1", "site-2"],
        "rounds": [],
        "decisions": [
            {"site": "site-2", "status": "pending", "operator": None, "reason": None},
            {"site": "site-3", "status": "rejected", "operator": "ops", "reason": "no GPU time"},
        ],
    }  # fmt: skip
    lines = status_summary(job).splitlines()
    assert lines[1] == "  awaiting approval at site-2"
    assert lines[2] == "  site-3 rejected it (ops): no GPU time"
