"""Secure aggregation's stages through the real API in process (SQLite and PostgreSQL): three
`SecAggClient`s speak to the site routes, the job store's stage state closes each stage once,
and the transcript it keeps unmasks exactly the sum of the three updates. Bad messages get a
4xx naming what is wrong and change nothing; a silent site is left out at the deadline."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from backend_support import RecordingDispatcher, auth, job_spec, open_round, submit_zip, zip_folder
from fastapi.testclient import TestClient
from safetensors.torch import save
from sqlalchemy import select, update

from resonfl.fl.secagg import (
    MASKED_KEY,
    Params,
    SecAggArgs,
    SecAggClient,
    SecAggFedAvg,
    Transcript,
    encode,
)
from resonfl_server.backend.models import Job, SecAggRound, SiteResult, utcnow
from resonfl_server.backend.services import secagg
from resonfl_server.backend.web import job_view

SITES = ["site-1", "site-2", "site-3"]
GLOBAL = {"fc.weight": torch.full((2, 4), 0.5), "fc.bias": torch.zeros(2)}
SIZE = 8 + 2 + 1  # the float values and the samples count


@pytest.fixture
def job_id(
    client: TestClient, app: Any, tmp_path: Path, user_token: str, site_tokens: dict[str, str]
) -> int:
    spec = job_spec(tmp_path, shards=False)
    spec.federation.sites = SITES
    spec.federation.aggregator_path = "resonfl.fl.secagg.SecAggFedAvg"
    response = submit_zip(client, user_token, zip_folder(spec.render(tmp_path / "job")))
    assert response.status_code == 201, response.text
    job = int(response.json()["id"])
    open_round(app, job, 0, save(GLOBAL))
    with app.state.session_factory() as db:  # what rounds._open_round adds for a SecAgg job
        for site in SITES:
            db.add(SiteResult(job_id=job, round_num=0, site=site))
        secagg.open_round(db, job, 0, SIZE, stage_timeout_s=60.0)
        db.commit()
    return job


def url(job: int, tail: str = "") -> str:
    return f"/api/v1/site/jobs/{job}/rounds/0/secagg{tail}"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def upload(client: TestClient, token: str, job: int, tensors: dict[str, torch.Tensor]) -> Any:
    data = save(tensors)
    meta = {"samples": 1, "metrics": {}, "train_s": 1.0, "sha256": hashlib.sha256(data).hexdigest()}
    return client.post(
        f"/api/v1/site/jobs/{job}/rounds/0/result",
        content=data,
        headers={
            **auth(token),
            "Content-Type": "application/octet-stream",
            "X-Result-Meta": json.dumps(meta),
        },
    )


def test_three_sites_through_the_api_unmask_exactly_their_sum(
    client: TestClient,
    app: Any,
    job_id: int,
    site_tokens: dict[str, str],
    dispatcher: RecordingDispatcher,
) -> None:
    args = SecAggArgs()
    clients = {s: SecAggClient(s, Params(0, (), 0, args)) for s in SITES}
    for site, c in clients.items():
        c_pub, s_pub = c.public_keys()
        resp = client.post(url(job_id, "/keys"), json={"c": b64(c_pub), "s": b64(s_pub)},
                           headers=auth(site_tokens[site]))  # fmt: skip
        assert resp.status_code == 200, resp.text
    view = resp.json()
    assert view["stage"] == "shares" and view["sites"] == SITES  # the last key closed it

    for site, c in clients.items():
        c.join(Params(0, tuple(view["sites"]), SIZE, args))
        keys = {
            s: (base64.b64decode(k["c"]), base64.b64decode(k["s"])) for s, k in view["keys"].items()
        }
        boxes = {p: b64(box) for p, box in c.encrypted_shares(keys).items()}
        resp = client.post(url(job_id, "/shares"), json={"boxes": boxes},
                           headers=auth(site_tokens[site]))  # fmt: skip
        assert resp.status_code == 200, resp.text
    assert resp.json()["stage"] == "masked"

    updates = {s: {k: v + 0.01 * (i + 1) for k, v in GLOBAL.items()} for i, s in enumerate(SITES)}
    samples = {"site-1": 10, "site-2": 30, "site-3": 60}
    for site, c in clients.items():
        mine = client.get(url(job_id), headers=auth(site_tokens[site])).json()
        assert sorted(mine["inbox"]) == sorted(set(SITES) - {site})  # addressed to it only
        inbox = {s: base64.b64decode(box) for s, box in mine["inbox"].items()}
        masked = c.masked_update(encode(GLOBAL, updates[site], samples[site], args), inbox)
        resp = upload(client, site_tokens[site], job_id, {MASKED_KEY: torch.from_numpy(masked)})
        assert resp.status_code == 200, resp.text
    view = client.get(url(job_id), headers=auth(site_tokens["site-1"])).json()
    assert view["stage"] == "unmask"
    assert (view["survivors"], view["dropped"]) == (SITES, [])
    with app.state.session_factory() as db:  # the job page says where the round is
        page = job_view.build(db.get(Job, job_id), "alice", app.state.store, {})
        assert page.rows[0].note == "secure aggregation: unmasking the sum of 3 (0 dropped)"
        assert "left the site masked" in page.rows[0].cells[0][1]
    assert ("aggregate", job_id, 0) not in dispatcher.calls  # not before the answers

    for site, c in clients.items():
        answers = c.unmask_shares(view["survivors"], view["dropped"])
        body = {"shares": {p: str(v) for p, v in answers.items()}}
        resp = client.post(url(job_id, "/unmask"), json=body, headers=auth(site_tokens[site]))
        assert resp.status_code == 200, resp.text
    assert resp.json()["stage"] == "ready"
    assert dispatcher.calls.count(("aggregate", job_id, 0)) == 1

    # the aggregator's side: masked vectors + the stored transcript -> FedAvg of the updates
    aggregator = SecAggFedAvg()
    aggregator.take_masked_uploads()
    aggregator.reset(GLOBAL, 0)
    with app.state.session_factory() as db:
        row = secagg.state_of(db, job_id, 0)
        assert row is not None
        aggregator.use_transcript(Transcript(**secagg.transcript(db, row)))
        store = app.state.store
        for res in db.scalars(select(SiteResult).where(SiteResult.job_id == job_id)):
            vector = torch.from_numpy(
                np.frombuffer(_tensor_bytes(store.path(res.artifact_key)), dtype=np.uint64).copy()
            )
            aggregator.accept(res.site, {MASKED_KEY: vector}, 1)
    out = aggregator.aggregate()
    total = sum(samples.values())
    for key in GLOBAL:
        expected = sum(samples[s] * updates[s][key] for s in SITES) / total
        assert torch.allclose(out[key], expected, atol=1e-6), key


def _tensor_bytes(path: Path) -> bytes:
    from safetensors.numpy import load_file

    return load_file(str(path))[MASKED_KEY].tobytes()


def test_bad_messages_get_a_clear_4xx_and_change_nothing(
    client: TestClient, app: Any, job_id: int, site_tokens: dict[str, str]
) -> None:
    one = auth(site_tokens["site-1"])
    bad = [
        (url(job_id, "/keys"), {"c": "not base64!", "s": b64(b"\0" * 32)}, 422, "c"),
        (url(job_id, "/keys"), {"c": b64(b"\0" * 31), "s": b64(b"\0" * 32)}, 422, "31 bytes"),
        (url(job_id, "/shares"), {"boxes": {"site-2": b64(b"\0" * 160)}}, 409, "stage 'keys'"),
        (url(job_id, "/unmask"), {"shares": {"site-2": "1"}}, 409, "stage 'keys'"),
    ]
    for path, body, status, words in bad:
        resp = client.post(path, json=body, headers=one)
        assert resp.status_code == status, (path, resp.text)
        assert words in resp.text, resp.text
    masked = upload(
        client, site_tokens["site-1"], job_id, {MASKED_KEY: torch.zeros(SIZE, dtype=torch.uint64)}
    )
    assert masked.status_code == 409 and "stage 'keys'" in masked.text
    assert client.get(url(job_id), headers=one).json()["stage"] == "keys"  # nothing moved
    with app.state.session_factory() as db:
        assert secagg._messages(db, secagg.state_of(db, job_id, 0), "keys") == {}  # type: ignore[arg-type]

    keys = {
        s: {"c": b64(bytes([i]) * 32), "s": b64(bytes([i + 9]) * 32)} for i, s in enumerate(SITES)
    }
    for site in SITES:
        client.post(url(job_id, "/keys"), json=keys[site], headers=auth(site_tokens[site]))
    stranger = client.post(
        url(job_id, "/shares"), json={"boxes": {"site-9": b64(b"\0" * 160)}}, headers=one
    )
    assert stranger.status_code == 422 and "site-9" in stranger.text
    short = client.post(
        url(job_id, "/shares"), json={"boxes": {"site-2": b64(b"\0" * 10)}}, headers=one
    )
    assert short.status_code == 422 and "160 expected" in short.text
    assert client.post(url(job_id, "/keys"), json=keys["site-1"], headers=one).status_code == 409


def test_a_silent_site_is_left_out_when_the_key_stage_times_out(
    client: TestClient, app: Any, job_id: int, site_tokens: dict[str, str]
) -> None:
    for i, site in enumerate(SITES[:2]):  # site-3 never posts its keys
        body = {"c": b64(bytes([i]) * 32), "s": b64(bytes([i + 9]) * 32)}
        assert (
            client.post(
                url(job_id, "/keys"), json=body, headers=auth(site_tokens[site])
            ).status_code
            == 200
        )
    assert client.get(url(job_id), headers=auth(site_tokens["site-1"])).json()["stage"] == "keys"
    with app.state.session_factory() as db:
        db.execute(update(SecAggRound).values(stage_deadline=utcnow() - timedelta(seconds=1)))
        db.commit()
    view = client.get(url(job_id), headers=auth(site_tokens["site-1"])).json()
    assert (view["stage"], view["sites"]) == ("shares", ["site-1", "site-2"])
    late = client.post(url(job_id, "/keys"), json={"c": b64(b"\1" * 32), "s": b64(b"\2" * 32)},
                       headers=auth(site_tokens["site-3"]))  # fmt: skip
    assert late.status_code == 409 and "stage 'shares'" in late.text


def test_a_job_without_secure_aggregation_has_no_stages(
    client: TestClient, app: Any, tmp_path: Path, user_token: str, site_tokens: dict[str, str]
) -> None:
    resp = submit_zip(client, user_token, zip_folder(job_spec(tmp_path).render(tmp_path / "plain")))
    job = int(resp.json()["id"])
    open_round(app, job, 0, save(GLOBAL))
    resp = client.get(url(job), headers=auth(site_tokens["site-1"]))
    assert resp.status_code == 404 and "no secure aggregation" in resp.text
    assert client.get(url(job), headers=auth(site_tokens["site-3"])).status_code == 403
