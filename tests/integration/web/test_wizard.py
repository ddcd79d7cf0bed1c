"""The wizard over the real app: each step validates on the server with the error beside its
field, input survives Back and Next, Review shows the SDK's bytes, Submit creates the job."""

from __future__ import annotations

import html
import io
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from resonfl_server.backend.models import Job as JobRow
from resonfl.catalog import get_example
from resonfl.catalog.shards import make_shards
from resonfl.config import FederationConfig, TrainingConfig
from resonfl.job import Job
from resonfl_server.backend.web.drafts import federation_config
from web_support import DATA, FEDERATION, MODEL, _draft_url, _post, _training_form, walk_to


def _error(html_text: str, field: str) -> str:
    match = re.search(rf'id="{re.escape(field)}-error"[^>]*>([^<]*)<', html_text)
    assert match, f"no error beside {field}"
    return html.unescape(match.group(1))


def test_model_step_rejects_a_model_def_without_the_train_function(
    client: TestClient, signed_in: str
) -> None:
    base = _draft_url(client)
    source = b"import torch\nclass Net(torch.nn.Module):\n    pass\n"
    response = _post(
        client, f"{base}/model", signed_in, {**MODEL, "source": "upload", "class_name": "Net"},
        files={"model_def": ("model_def.py", io.BytesIO(source), "text/x-python")},
    )  # fmt: skip
    assert response.status_code == 422
    assert "fl_train_model" in _error(response.text, "train_fn")
    assert "Uploaded: model_def.py" in response.text


def test_model_step_rejects_a_checkpoint_that_is_not_a_state_dict(
    client: TestClient, signed_in: str
) -> None:
    base = _draft_url(client)
    response = _post(
        client, f"{base}/model", signed_in, MODEL,
        files={"checkpoint": ("warm.pt", io.BytesIO(b"not a torch file"), "application/octet-stream")},
    )  # fmt: skip
    assert response.status_code == 422
    assert "weights_only" in _error(response.text, "checkpoint")


def test_training_step_shows_each_error_beside_its_field(
    client: TestClient, signed_in: str, sites: list[str]
) -> None:
    page = walk_to(client, signed_in, "training")
    data = _training_form(
        client, page.base, {"lr": "-1", "batch_size": "many", "extra": "not a pair"}
    )
    response = _post(client, f"{page.base}/training", signed_in, data)
    assert response.status_code == 422
    assert "greater than 0" in _error(response.text, "lr")
    assert "integer" in _error(response.text, "batch_size")
    assert "KEY=value" in _error(response.text, "extra")
    assert 'value="many"' in response.text  # what was typed stays


def test_training_guidance_computes_the_ema_trap_from_the_values(
    client: TestClient, signed_in: str, sites: list[str]
) -> None:
    page = walk_to(client, signed_in, "training")
    data = _training_form(
        client, page.base, {"ema_decay": "0.999", "local_steps": "148", "ema_persist": ""}
    )
    data.pop("ema_persist", None)
    response = client.post(
        f"{page.base}/training/guidance",
        data=data,
        headers={"X-CSRF-Token": signed_in, "HX-Request": "true"},
    )
    assert response.status_code == 200
    assert "0.999^148 = 0.86" in response.text and "14%" in response.text


def test_federation_step_rejects_min_clients_above_the_sites(
    client: TestClient, signed_in: str, sites: list[str]
) -> None:
    page = walk_to(client, signed_in, "federation")
    response = _post(
        client, f"{page.base}/federation", signed_in, {**FEDERATION, "min_clients": "5"}
    )
    assert response.status_code == 422
    assert "exceeds the number of sites" in _error(response.text, "min_clients")


def test_federation_step_validates_aggregator_arguments(
    client: TestClient, signed_in: str, sites: list[str]
) -> None:
    page = walk_to(client, signed_in, "federation")
    response = _post(
        client,
        f"{page.base}/federation",
        signed_in,
        {**FEDERATION, "aggregator": "fedprox", "fedprox__mu": "-1"},
    )
    assert response.status_code == 422
    assert "greater than or equal to 0" in _error(response.text, "fedprox__mu")
    response = _post(
        client,
        f"{page.base}/federation",
        signed_in,
        {
            **FEDERATION,
            "aggregator": "hierarchicalfedavg",
            "hierarchicalfedavg__groups": "east: site-1",
        },
    )
    assert "site-2" in _error(response.text, "hierarchicalfedavg__groups")


def test_fedopt_warns_when_the_model_has_batchnorm(
    client: TestClient, signed_in: str, sites: list[str], tiny_model_def: str
) -> None:
    base = _draft_url(client)
    response = _post(
        client, f"{base}/model", signed_in, {**MODEL, "source": "upload", "class_name": "Net"},
        files={"model_def": ("model_def.py", io.BytesIO(tiny_model_def.encode()), "text/x-python")},
    )  # fmt: skip
    assert response.status_code == 303, response.text
    response = _post(
        client,
        f"{base}/federation",
        signed_in,
        {**FEDERATION, "aggregator": "fedadam"},
        nav="save",
    )
    assert "FedOpt and BatchNorm" in response.text


def test_dp_sgd_on_a_batchnorm_model_warns_and_krum_refuses_too_few_sites(
    client: TestClient, signed_in: str, sites: list[str], tiny_model_def: str
) -> None:
    base = _draft_url(client)
    response = _post(
        client, f"{base}/model", signed_in, {**MODEL, "source": "upload", "class_name": "Net"},
        files={"model_def": ("model_def.py", io.BytesIO(tiny_model_def.encode()), "text/x-python")},
    )  # fmt: skip
    assert response.status_code == 303, response.text
    response = _post(
        client, f"{base}/federation", signed_in, {**FEDERATION, "aggregator": "dpsgdfedavg"},
        nav="save",
    )  # fmt: skip
    assert "DP-SGD and BatchNorm" in response.text and "GroupNorm" in response.text
    response = _post(
        client, f"{base}/federation", signed_in, {**FEDERATION, "aggregator": "krum"}, nav="save"
    )
    assert "needs at least 5 sites" in _error(response.text, "krum__max_bad_sites")


def test_data_step_rejects_a_shard_that_is_not_a_zip(
    client: TestClient, signed_in: str, sites: list[str]
) -> None:
    page = walk_to(client, signed_in, "data")
    response = _post(
        client, f"{page.base}/data", signed_in, {**DATA, "mode": "upload"},
        files={"shard__site-1": ("site-1.zip", io.BytesIO(b"nope"), "application/zip")},
    )  # fmt: skip
    assert response.status_code == 422
    assert "not a zip file" in _error(response.text, "shard__site-1")


def test_data_step_chooses_data_at_the_sites_when_the_model_is_not_a_catalog_example(
    client: TestClient, signed_in: str, sites: list[str]
) -> None:
    """Generating needs an example; with an uploaded model_def.py (even after Generate was
    chosen for an example before) "Data at the sites" is the one checked, not none at all."""
    page = walk_to(client, signed_in, "data")
    base = page.base  # type: ignore[attr-defined]
    assert re.search(r'id="mode-generate"[^>]*checked', page.text)
    source = (
        b"import torch\nclass Net(torch.nn.Module):\n    pass\n\n"
        b"def fl_train_model(model, env, out_dir, logger):\n    return {}\n"
    )
    response = _post(
        client, f"{base}/model", signed_in, {**MODEL, "source": "upload", "class_name": "Net"},
        files={"model_def": ("model_def.py", io.BytesIO(source), "text/x-python")}, nav="save",
    )  # fmt: skip
    assert response.status_code == 200, response.text[:2000]
    data = client.get(f"{base}/data").text
    assert re.search(r'id="mode-sites"[^>]*checked', data)
    assert re.search(r'id="mode-generate"[^>]*disabled', data)
    assert not re.search(r'id="mode-generate"[^>]*checked', data)


def test_back_and_next_keep_what_was_typed(
    client: TestClient, signed_in: str, sites: list[str]
) -> None:
    page = walk_to(client, signed_in, "training")
    data = _training_form(client, page.base, {"lr": "0.0123", "weight_decay": "oops"})
    assert _post(client, f"{page.base}/training", signed_in, data, nav="back").status_code == 303
    again = client.get(f"{page.base}/training").text
    assert 'value="0.0123"' in again and 'value="oops"' in again


def _sdk_job(data_dir: Path) -> Job:
    """What the SDK renders for the same settings as `walk_to` enters."""
    info = get_example("digits")
    shards = make_shards("digits", data_dir / "sdk-shards", 2, "iid", 0.5, 0, verbose=False)
    return Job(
        name="digits-web",
        model=info.model_config(),
        training=TrainingConfig(**{**info.training, "local_steps": 5, "batch_size": 32}),
        federation=FederationConfig(num_rounds=2, sites=["site-1", "site-2"]),
        shards=shards,
    )


def test_review_shows_the_six_files_byte_identical_to_the_sdk(
    client: TestClient, signed_in: str, sites: list[str], tmp_path: Path
) -> None:
    page = walk_to(client, signed_in, "review")
    shown = {
        name: html.unescape(re.sub(r"<[^>]+>", "", body))
        for name, body in re.findall(
            r'<pre class="code" tabindex="0" data-file="([^"]+)"><code>(.*?)</code></pre>',
            page.text,
            re.S,
        )
    }
    expected = _sdk_job(tmp_path).rendered_files()
    assert list(shown) == list(expected)
    for name, text in expected.items():
        assert shown[name].encode() == text.encode(), name
    archive = client.get(f"{page.base}/review/job.zip")
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zf:
        for name, text in expected.items():
            assert zf.read(f"digits-web/{name}") == text.encode(), name
        assert "digits-web/shards/site-1/train.npz" in zf.namelist()


def test_submit_creates_the_job_and_opens_its_page(
    client: TestClient, signed_in: str, sites: list[str], session: Session, dispatcher: Any
) -> None:
    page = walk_to(client, signed_in, "review")
    response = client.post(f"{page.base}/review/submit", data={"csrf_token": signed_in})
    assert response.status_code == 303, response.text[:2000]
    job_url = response.headers["location"]
    job_id = int(job_url.rsplit("/", 1)[1])
    row = session.get(JobRow, job_id)
    assert row is not None and row.sites == ["site-1", "site-2"] and row.num_rounds == 2
    assert ("start", job_id) in dispatcher.sent
    page = client.get(job_url)
    assert page.status_code == 200
    assert f'hx-get="/jobs/{job_id}/live"' in page.text
    assert "Cancel job" in page.text
    assert client.get("/jobs").text.count(f"/jobs/{job_id}") >= 1


def test_review_redirects_to_the_first_unfinished_step(client: TestClient, signed_in: str) -> None:
    base = _draft_url(client)
    response = client.get(f"{base}/review")
    assert response.status_code == 200
    assert 'aria-current="step">1. Model' in response.text


@pytest.mark.parametrize("status", ["finished", "running"])
def test_the_live_region_stops_polling_once_the_job_ended(
    client: TestClient, signed_in: str, sites: list[str], session: Session, status: str
) -> None:
    from resonfl_server.backend.models import JobStatus

    page = walk_to(client, signed_in, "review")
    job_url = client.post(f"{page.base}/review/submit", data={"csrf_token": signed_in}).headers[
        "location"
    ]
    row = session.get(JobRow, int(job_url.rsplit("/", 1)[1]))
    assert row is not None
    row.status = JobStatus(status)
    session.commit()
    live = client.get(f"{job_url}/live", headers={"HX-Request": "true"})
    assert live.status_code == 200
    assert ("hx-trigger" in live.text) == (status == "running")
    assert (live.headers.get("HX-Trigger") == "job-ended") == (status == "finished")


def test_cancel_from_the_job_page(
    client: TestClient, signed_in: str, sites: list[str], session: Session, dispatcher: Any
) -> None:
    page = walk_to(client, signed_in, "review")
    job_url = client.post(f"{page.base}/review/submit", data={"csrf_token": signed_in}).headers[
        "location"
    ]
    assert client.post(f"{job_url}/cancel", data={}).status_code == 403  # no CSRF token
    assert client.post(f"{job_url}/cancel", data={"csrf_token": signed_in}).status_code == 303
    after = client.get(job_url).text
    assert 'data-status="cancelled"' in after and "Cancel job" not in after
    assert "cancelled by admin@example.org" in after


def test_cancel_with_htmx_swaps_the_live_region_in_place(
    client: TestClient, signed_in: str, sites: list[str], dispatcher: Any
) -> None:
    """The job page's Cancel button posts with htmx: the answer is the live region itself,
    ended (no poller) and flagged with HX-Trigger, not a redirect to reload the page."""
    page = walk_to(client, signed_in, "review")
    job_url = client.post(f"{page.base}/review/submit", data={"csrf_token": signed_in}).headers[
        "location"
    ]
    job_id = int(job_url.rsplit("/", 1)[1])
    running = client.get(job_url).text
    assert f'hx-post="/jobs/{job_id}/cancel"' in running and 'hx-target="#job-live"' in running
    assert 'id="cancel-job"' in running  # htmx keeps focus on it across polls by its id
    response = client.post(
        f"{job_url}/cancel", headers={"HX-Request": "true", "X-CSRF-Token": signed_in}
    )
    assert response.status_code == 200 and "HX-Redirect" not in response.headers
    assert response.headers.get("HX-Trigger") == "job-ended"
    assert response.text.lstrip().startswith('<section id="job-live"')
    assert 'data-status="cancelled"' in response.text
    assert "hx-trigger" not in response.text and "Cancel job" not in response.text


def test_everything_focusable_in_the_live_region_has_an_id(
    client: TestClient, signed_in: str, sites: list[str]
) -> None:
    """htmx restores focus after a swap only to an element with the same id."""
    page = walk_to(client, signed_in, "review")
    job_url = client.post(f"{page.base}/review/submit", data={"csrf_token": signed_in}).headers[
        "location"
    ]
    live = client.get(f"{job_url}/live", headers={"HX-Request": "true"}).text
    focusable = re.findall(r"<(?:a|button|pre|input|select|textarea)\b[^>]*>", live)
    focusable = [
        tag for tag in focusable
        if 'type="hidden"' not in tag and (not tag.startswith("<pre") or "tabindex" in tag)
    ]  # fmt: skip
    assert focusable
    for tag in focusable:
        assert re.search(r'\bid="[^"]+"', tag), f"no id on {tag}"


def test_download_before_the_job_finished_says_so(
    client: TestClient, signed_in: str, sites: list[str]
) -> None:
    page = walk_to(client, signed_in, "review")
    job_url = client.post(f"{page.base}/review/submit", data={"csrf_token": signed_in}).headers[
        "location"
    ]
    response = client.get(f"{job_url}/download")
    assert response.status_code == 404 and "not available" in response.text


def _report(
    session: Session, site: str, datasets: list[dict[str, Any]], policy: Any = None
) -> None:
    from resonfl_server.backend.models import Site
    from resonfl_server.backend.services import accounts

    row = session.query(Site).filter_by(name=site).one()
    accounts.heartbeat(session, row, "idle", [], datasets, policy)


def _images(samples: int) -> dict[str, Any]:
    return {"name": "images", "format": "image-folder", "description": "", "samples": samples,
            "labels": {"circle": samples // 2, "square": samples - samples // 2}}  # fmt: skip


def test_data_at_the_sites_lists_the_holders_unticks_the_rest_and_names_the_dataset(
    client: TestClient, signed_in: str, sites: list[str], session: Session
) -> None:
    from resonfl_server.backend.services import accounts

    accounts.register_site(session, "site-3")
    _report(session, "site-1", [_images(40)])
    _report(session, "site-3", [_images(30)], {"require_approval": True})
    _report(session, "site-2", [{**_images(9), "name": "other"}])
    page = walk_to(client, signed_in, "data")  # the Federation step chose site-1 and site-2
    base = page.base  # type: ignore[attr-defined]
    assert "images (2 sites)" in page.text and "other (1 site)" in page.text
    holders = client.get(f"{base}/data/holders", params={"dataset": "images"}).text
    assert re.search(r'id="holder__site-1"[^>]*checked', holders) and "40" in holders
    assert "circle 20, square 20" in holders
    assert re.search(r'id="holder__site-2"[^>]*disabled', holders)
    assert "does not hold images — unticked" in holders  # chosen, but it lacks the data
    assert not re.search(r'id="holder__site-3"[^>]*checked', holders)  # holds it, not chosen
    assert holders.count("approval required") == 1  # site-3's operator approves each job

    form = {"mode": "sites", "dataset": "images", "holders_for": "images",
            "holder": ["site-1", "site-3", "site-2"]}  # fmt: skip
    assert _post(client, f"{base}/data", signed_in, form).status_code == 303
    assert client.get(f"{base}/review").status_code == 200
    response = _post(client, f"{base}/review/submit", signed_in, {})
    job = session.get(JobRow, int(response.headers["location"].rsplit("/", 1)[1]))
    assert job is not None and job.sites == ["site-1", "site-3"]
    spec = Job.load(client.app.state.store.job_folder(job.id))  # type: ignore[attr-defined]
    assert spec.federation.dataset == "images" and spec.shards == {}


def test_data_at_the_sites_refuses_a_dataset_no_site_holds(
    client: TestClient, signed_in: str, sites: list[str]
) -> None:
    page = walk_to(client, signed_in, "data")
    base = page.base  # type: ignore[attr-defined]
    form = {"mode": "sites", "dataset": "xrays", "holders_for": "xrays"}
    response = _post(client, f"{base}/data", signed_in, form)
    assert response.status_code == 422
    assert _error(response.text, "dataset") == "no registered site reports a dataset 'xrays'"


def test_sites_per_round_is_checked_and_reaches_the_server_config(
    client: TestClient, signed_in: str, sites: list[str]
) -> None:
    page = walk_to(client, signed_in, "federation")
    bad = _post(
        client, f"{page.base}/federation", signed_in, {**FEDERATION, "sites_per_round": "3"}
    )
    assert bad.status_code == 422
    assert "from 1 to the 2 chosen sites" in _error(bad.text, "sites_per_round")
    good = _post(
        client, f"{page.base}/federation", signed_in, {**FEDERATION, "sites_per_round": "1"}
    )
    assert good.status_code == 303, good.text[:500]
    shown = client.get(f"{page.base}/federation").text
    assert re.search(r'name="sites_per_round"[^>]*value="1"', shown), "the input keeps its value"
    raw = {**FEDERATION, "sites": "site-1,site-2", "sites_per_round": "1"}
    fed, errors = federation_config(raw, sites)
    assert not errors and fed is not None and fed.workflow_args == {"sites_per_round": 1}
