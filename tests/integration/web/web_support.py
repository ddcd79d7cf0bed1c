"""Helpers shared by the page tests (a uniquely named module: every test folder's `conftest`
is a different module of the same name)."""

from __future__ import annotations

import html
import re
from typing import Any

from fastapi.testclient import TestClient

PASSWORD = "correct horse battery"


class RecordingDispatcher:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    def send_start(self, job_id: int) -> None:
        self.sent.append(("start", job_id))

    def send_train(self, site: str, job_id: int, round_num: int) -> None:
        self.sent.append(("train", site, job_id, round_num))

    def send_prepare(self, site: str, job_id: int) -> None:
        self.sent.append(("prepare", site, job_id))

    def send_aggregate(self, job_id: int, round_num: int) -> None:
        self.sent.append(("aggregate", job_id, round_num))

    def send_fold(self, job_id: int, round_num: int, site: str) -> None:
        self.sent.append(("fold", job_id, round_num, site))



def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def sign_in(client: TestClient, email: str = "admin@example.org", password: str = PASSWORD) -> str:
    """Sign in through the form; return the session's CSRF token."""
    page = client.get("/login")
    response = client.post(
        "/login",
        data={
            "email": email,
            "password": password,
            "next": "/jobs",
            "csrf_token": csrf_of(page.text),
        },
    )
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/jobs").text)


MODEL = {"name": "digits-web", "source": "example", "example": "digits"}
TRAINING_CHANGES = {"local_steps": "5", "batch_size": "32"}
FEDERATION = {
    "num_rounds": "2",
    "sites": ["site-1", "site-2"],
    "workflow": "scatter_and_gather",
    "aggregator": "fedavg",
}
DATA = {"mode": "generate", "split": "iid", "alpha": "0.5", "seed": "0"}


def _draft_url(client: TestClient) -> str:
    response = client.get("/jobs/new")
    assert response.status_code == 303
    return response.headers["location"].rsplit("/", 1)[0]


def _post(
    client: TestClient, url: str, csrf: str, data: dict[str, Any], nav: str = "next", **kw: Any
) -> Any:
    return client.post(url, data={**data, "csrf_token": csrf, "nav": nav}, **kw)


def _training_form(client: TestClient, base: str, changes: dict[str, str]) -> dict[str, Any]:
    """The Training page's own values (as a browser would post them) with `changes`."""
    page = client.get(f"{base}/training").text
    data: dict[str, Any] = {}
    for m in re.finditer(r'<input id="([^"]+)" name="\1" type="text" value="([^"]*)"', page):
        data[m.group(1)] = html.unescape(m.group(2))
    for m in re.finditer(r'<input id="([^"]+)" name="\1" type="checkbox" checked', page):
        data[m.group(1)] = "on"
    for m in re.finditer(r'<select id="([^"]+)" name="\1".*?</select>', page, re.S):
        sel = re.search(r"<option selected>([^<]*)<", m.group(0))
        data[m.group(1)] = sel.group(1) if sel else ""
    data["extra"] = ""
    return {**data, **changes}


def walk_to(client: TestClient, csrf: str, step: str) -> Any:
    """Fill every step before `step` with good values; return `step`'s page."""
    base = _draft_url(client)
    order = ["model", "training", "federation", "data", "review"]
    for done in order[: order.index(step)]:
        if done == "model":
            data = MODEL
        elif done == "training":
            data = _training_form(client, base, TRAINING_CHANGES)
        elif done == "federation":
            data = FEDERATION
        else:
            data = DATA
        response = _post(client, f"{base}/{done}", csrf, data)
        assert response.status_code == 303, (done, response.text[:3000])
    page = client.get(f"{base}/{step}")
    assert page.status_code == 200
    page.base = base  # type: ignore[attr-defined]
    return page
