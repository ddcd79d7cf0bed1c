"""The job page says where round 0 spent its time: the server's initial weights and each
site's cold start, as stored from their reports (live region, server-rendered)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from resonfl_server.backend.models import (
    Job,
    JobStatus,
    ResultStatus,
    Round,
    RoundStatus,
    SiteResult,
    utcnow,
)


def test_the_job_page_shows_where_round_0_spent_its_time(
    client: TestClient, signed_in: str, session: Session, admin: Any, sites: list[str]
) -> None:
    job = Job(
        owner_id=admin.id, name="cold", status=JobStatus.RUNNING, files={}, config={},
        sites=sites, num_rounds=2, min_clients=2, current_round=0, started_at=utcnow(),
        init_phases={"total_s": 0.9, "process_s": 0.04, "build_s": 0.61, "save_s": 0.12,
                     "warm": True},
    )  # fmt: skip
    session.add(job)
    session.flush()
    session.add(Round(job_id=job.id, number=0, status=RoundStatus.RUNNING, started_at=utcnow()))
    session.add(
        SiteResult(
            job_id=job.id, round_num=0, site="site-1", status=ResultStatus.DONE, samples=8,
            phases={"process_s": 3.21, "started_process": True, "import_s": 0.02,
                    "build_s": 0.05, "data_s": 0.33, "train_s": 1.47},
        )
    )  # fmt: skip
    session.add(SiteResult(job_id=job.id, round_num=0, site="site-2"))  # still training
    session.commit()

    html = client.get(f"/jobs/{job.id}/live", headers={"HX-Request": "true"}).text

    assert "Round 0: where the time went" in html
    table = html[html.index('id="round0-phases"') :]
    table = table[: table.index("</table>")]
    server = _row(table, "initial weights (server)")
    assert server[:9] == ["—", "—", "0.04 s", "—", "0.61 s", "—", "—", "—", "0.12 s"]
    assert server[9] == "warm"
    site = _row(table, "site-1")
    assert site[2] == "3.21 s" and site[5] == "0.33 s" and site[7] == "1.47 s"
    assert site[9] == "cold"  # this round started the job process
    assert "site-2" not in table  # no report yet


def _row(table: str, who: str) -> list[str]:
    row = table[table.index(f'<th scope="row">{who}</th>') :]
    row = row[: row.index("</tr>")]
    return [cell.split("</td>")[0].strip() for cell in row.split("<td>")[1:]]
