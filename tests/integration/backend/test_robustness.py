"""No input gives a 5xx: bad input is a 4xx naming the field and changes nothing.

Each test is a class of bug found by fuzzing the API (every one answered 500, or raised inside
the server, before its fix). The fuzzing, for the record (schemathesis 4.32, server started in
process on a SQLite file with a recording dispatcher, three sites registered, a job with
round 0 open):

    st run http://127.0.0.1:PORT/api/v1/openapi.json -H "Authorization: Bearer $ADMIN_TOKEN" \\
        --exclude-path-regex '^/api/v1/site/' -c not_a_server_error --max-time 150 -w 2
    st run http://127.0.0.1:PORT/api/v1/openapi.json -H "Authorization: Bearer $SITE_TOKEN" \\
        --include-path-regex '^/api/v1/site/' -c not_a_server_error --max-time 150 -w 2

plus hand-made inputs on SQLite and PostgreSQL (the cases below). Schemathesis is not a test
dependency: its runs take minutes and are not deterministic, so they are not part of the suite.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from backend_support import auth, open_round, safetensors_bytes, submit_zip, zip_folder
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from resonfl_server.backend.models import (
    ApiToken,
    Artifact,
    Job,
    ResultStatus,
    Site,
    SiteResult,
    User,
)

BIG = 2**63  # past every INTEGER column (SQLite int64, PostgreSQL int4)


@pytest.fixture
def job_id(client: TestClient, app: Any, job_dir: Path, user_token: str) -> int:
    response = submit_zip(client, user_token, zip_folder(job_dir))
    assert response.status_code == 201, response.text
    job = int(response.json()["id"])
    open_round(app, job, 0, safetensors_bytes(0.5))
    return job


def _field_error(response: Any, *loc: str) -> str:
    """A FastAPI 422 whose first error sits at `loc`; returns its message."""
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert tuple(error["loc"]) == loc, error
    return str(error["msg"])


def _count(app: Any, model: type, *where: Any) -> int:
    with app.state.session_factory() as db:
        return int(db.scalar(select(func.count()).select_from(model).where(*where)) or 0)


# -- 1. ids, round numbers and offsets past an INTEGER column: 422, not an overflow ----------
@pytest.mark.parametrize(
    ("method", "url", "loc"),
    [
        ("GET", f"/api/v1/jobs/{BIG}", ("path", "job_id")),
        ("GET", f"/api/v1/jobs/-{BIG}", ("path", "job_id")),
        ("GET", f"/api/v1/jobs/{2**31}", ("path", "job_id")),
        ("POST", f"/api/v1/jobs/{BIG}/cancel", ("path", "job_id")),
        ("GET", f"/api/v1/jobs/{BIG}/logs", ("path", "job_id")),
        ("GET", f"/api/v1/jobs/{BIG}/download", ("path", "job_id")),
        ("GET", f"/api/v1/jobs/1/rounds/{BIG}/download", ("path", "round_num")),
        ("GET", "/api/v1/jobs/1/rounds/-1/download", ("path", "round_num")),
        ("GET", f"/api/v1/jobs?skip={BIG}", ("query", "skip")),
        ("GET", f"/api/v1/jobs?limit={BIG}", ("query", "limit")),
    ],
)
def test_out_of_range_numbers_from_users_are_named(
    client: TestClient, admin_token: str, method: str, url: str, loc: tuple[str, str]
) -> None:
    _field_error(client.request(method, url, headers=auth(admin_token)), *loc)


@pytest.mark.parametrize(
    ("method", "path", "loc"),
    [
        ("GET", f"/jobs/{BIG}", ("path", "job_id")),
        ("GET", f"/jobs/{BIG}/bundle", ("path", "job_id")),
        ("GET", f"/jobs/{BIG}/shard", ("path", "job_id")),
        ("GET", f"/jobs/{{job}}/rounds/{BIG}/weights", ("path", "round_num")),
        ("POST", f"/jobs/{{job}}/rounds/{BIG}/state", ("path", "round_num")),
        ("POST", "/jobs/{job}/rounds/-5/state", ("path", "round_num")),
    ],
)
def test_out_of_range_numbers_from_sites_are_named(
    client: TestClient,
    app: Any,
    job_id: int,
    site_tokens: dict[str, str],
    method: str,
    path: str,
    loc: tuple[str, str],
) -> None:
    url = "/api/v1/site" + path.replace("{job}", str(job_id))
    body = {"state": "training"} if method == "POST" else None
    response = client.request(method, url, json=body, headers=auth(site_tokens["site-1"]))
    _field_error(response, *loc)
    assert _count(app, SiteResult, SiteResult.round_num != 0) == 0


def test_services_refuse_ids_no_row_can_have(app: Any, session: Any, admin_token: str) -> None:
    """Callers other than the REST API (the web pages) get a 404, not an overflow."""
    from resonfl_server.backend.services import jobs, site_api
    from resonfl_server.backend.services.errors import NotFound

    admin = session.scalar(select(User).where(User.is_admin))
    site = Site(name="site-x", token_hash="0" * 64, gpus=[])
    for call in (
        lambda: jobs.get_job_for(session, admin, BIG),
        lambda: jobs.get_job_for(session, admin, -1),
        lambda: site_api.get_job_for_site(session, site, BIG),
    ):
        with pytest.raises(NotFound):
            call()


# -- 2. a site reporting on a round that does not exist changes nothing --------------------
def test_state_for_a_round_the_job_never_opened_is_refused(
    client: TestClient, app: Any, job_id: int, site_tokens: dict[str, str]
) -> None:
    for state in ("training", "failed"):
        response = client.post(
            f"/api/v1/site/jobs/{job_id}/rounds/12680/state",
            json={"state": state, "error": "boom", "log": "x"},
            headers=auth(site_tokens["site-1"]),
        )
        assert response.status_code == 404, response.text
        assert "round 12680" in response.json()["detail"]
    assert _count(app, SiteResult, SiteResult.round_num == 12680) == 0
    assert _count(app, Artifact, Artifact.kind == "log") == 0


# -- 3. text no database stores / no response carries: NUL, unpaired surrogates, NaN -------
def _post_raw(client: TestClient, url: str, body: str, token: str) -> Any:
    headers = {**auth(token), "Content-Type": "application/json"}
    return client.post(url, content=body.encode(), headers=headers)


@pytest.mark.parametrize(
    ("url", "body", "loc"),
    [
        ("/api/v1/users", '{"email": "a\\u0000b@example.org"}', ("body", "email")),
        ("/api/v1/users", '{"email": "a\\ud800@example.org"}', ("body", "email")),
        (
            "/api/v1/users",
            '{"email": "x@y.org", "password": "\\ud800secret!"}',
            ("body", "password"),
        ),
        ("/api/v1/tokens", '{"name": "ci\\u0000"}', ("body", "name")),
        ("/api/v1/tokens", '{"name": "ci\\udfff"}', ("body", "name")),
    ],
)
def test_unstorable_text_from_users_is_named(
    client: TestClient, app: Any, admin_token: str, url: str, body: str, loc: tuple[str, ...]
) -> None:
    before = _count(app, User), _count(app, ApiToken)
    _field_error(_post_raw(client, url, body, admin_token), *loc)
    assert (_count(app, User), _count(app, ApiToken)) == before


def test_an_email_that_grows_when_lower_cased_is_named(
    client: TestClient, app: Any, admin_token: str
) -> None:
    # "İ".lower() is two code points: 200 of them fit the limit, their lower case does not
    email = "İ" * 200 + "@example.org"
    response = client.post("/api/v1/users", json={"email": email}, headers=auth(admin_token))
    assert "lower-cased" in _field_error(response, "body", "email")
    assert _count(app, User) == 1  # the admin only


@pytest.mark.parametrize(
    ("url", "body", "loc"),
    [
        ("/status", '{"status": "idle", "gpus": [{"memory_mb": NaN}]}', ("body", "gpus")),
        ("/status", '{"status": "idle", "gpus": [{"name": "\\ud800"}]}', ("body", "gpus")),
        ("/status", '{"status": "idle", "gpus": [{"na\\u0000me": 1}]}', ("body", "gpus")),
        (
            "/jobs/{job}/rounds/0/state",
            '{"state": "failed", "error": "a\\u0000"}',
            ("body", "error"),
        ),
        (
            "/jobs/{job}/rounds/0/state",
            '{"state": "failed", "error": "\\udc00"}',
            ("body", "error"),
        ),
    ],
)
def test_unstorable_values_from_sites_are_named(
    client: TestClient,
    app: Any,
    job_id: int,
    site_tokens: dict[str, str],
    user_token: str,
    url: str,
    body: str,
    loc: tuple[str, ...],
) -> None:
    url = "/api/v1/site" + url.replace("{job}", str(job_id))
    _field_error(_post_raw(client, url, body, site_tokens["site-1"]), *loc)
    # nothing was stored, and what the job and the sites show still serializes
    sites = client.get("/api/v1/sites", headers=auth(user_token))
    assert [(s["name"], s["gpus"]) for s in sites.json()["data"]][0] == ("site-1", [])
    detail = client.get(f"/api/v1/jobs/{job_id}", headers=auth(user_token)).json()
    assert detail["rounds"][0]["results"] == []


# -- 4. the `meta` of a result upload: parsed strictly, so a bad one cannot lose a round ---
def _post_result(client: TestClient, token: str, job: int, meta: str, data: bytes) -> Any:
    return client.post(
        f"/api/v1/site/jobs/{job}/rounds/0/result",
        files={"weights": ("w.safetensors", data)},
        data={"meta": meta},
        headers=auth(token),
    )


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        ("[" * 100_000 + "]" * 100_000, ""),  # RecursionError in json.loads
        ('{"samples": 1, "sha256": "SHA", "metrics": {"val_loss": NaN}}', "metrics.val_loss"),
        ('{"samples": 1, "sha256": "SHA", "metrics": {"top1": "high"}}', "metrics.top1"),
        ('{"samples": 1, "sha256": "SHA", "train_s": Infinity}', "train_s"),
        ('{"samples": 9223372036854775808, "sha256": "SHA"}', "samples"),
        ('{"samples": 1, "sha256": "SHA", "metrics": {"\\ud800": 1}}', ""),
    ],
)
def test_a_bad_result_meta_is_named_and_records_nothing(
    client: TestClient,
    app: Any,
    job_id: int,
    site_tokens: dict[str, str],
    dispatcher: Any,
    meta: str,
    field: str,
) -> None:
    data = safetensors_bytes(1.0)
    meta = meta.replace("SHA", hashlib.sha256(data).hexdigest())
    response = _post_result(client, site_tokens["site-1"], job_id, meta, data)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["file"] == "meta" and detail["field"] == field, detail
    assert _count(app, SiteResult, SiteResult.status == ResultStatus.DONE) == 0
    assert _count(app, Artifact, Artifact.kind == "update") == 0
    assert not [c for c in dispatcher.calls if c[0] == "aggregate"]


def test_bad_input_after_a_delivered_update_leaves_it_as_it_was(
    client: TestClient, app: Any, job_id: int, site_tokens: dict[str, str], user_token: str
) -> None:
    data = safetensors_bytes(1.0)
    sha = hashlib.sha256(data).hexdigest()
    good = json.dumps({"samples": 10, "metrics": {"top1": 0.5}, "sha256": sha})
    assert _post_result(client, site_tokens["site-1"], job_id, good, data).status_code == 200
    token = site_tokens["site-1"]
    bad = good.replace("0.5", "NaN")
    assert _post_result(client, token, job_id, bad, data).status_code == 422
    state = f"/api/v1/site/jobs/{job_id}/rounds/0/state"
    assert (
        _post_raw(client, state, '{"state": "failed", "error": "\\ud800"}', token).status_code
        == 422
    )
    detail = client.get(f"/api/v1/jobs/{job_id}", headers=auth(user_token)).json()
    mine = [r for r in detail["rounds"][0]["results"] if r["site"] == "site-1"]
    assert [(r["status"], r["metrics"], r["sha256"]) for r in mine] == [
        ("done", {"top1": 0.5}, sha)
    ]


# -- 5. zips with odd entries: 422 naming the entry, nothing left behind -------------------
@pytest.fixture
def assert_nothing_left(app: Any):  # type: ignore[no-untyped-def]
    store = app.state.store
    yield
    assert _count(app, Job) == 0
    assert _count(app, Artifact) == 0
    assert list(store.jobs.iterdir()) == []
    assert list(store.tmp.iterdir()) == []


def _zip(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def _job_entries(job_dir: Path) -> list[tuple[str, bytes]]:
    return [
        (p.relative_to(job_dir).as_posix(), p.read_bytes())
        for p in sorted(job_dir.rglob("*"))
        if p.is_file()
    ]


def _patch_first_entry(data: bytes, mutate: Callable[[bytearray, int, int], None]) -> bytes:
    """Apply `mutate(raw, local_header_offset, central_header_offset)` to the first entry."""
    raw = bytearray(data)
    mutate(raw, raw.find(b"PK\x03\x04"), raw.find(b"PK\x01\x02"))
    return bytes(raw)


def _encrypted(raw: bytearray, local: int, central: int) -> None:
    raw[local + 6] |= 1  # "encrypted" flag bit, in both headers
    raw[central + 8] |= 1


def _unknown_method(raw: bytearray, local: int, central: int) -> None:
    raw[local + 8] = raw[central + 10] = 99  # compression method 99 (AES)


def _corrupt_data(raw: bytearray, local: int, central: int) -> None:
    start = local + 30 + int.from_bytes(raw[local + 26 : local + 28], "little")
    for i in range(start, start + 16):
        raw[i] ^= 0x55


@pytest.mark.parametrize(
    ("case", "entry", "message"),
    [
        ("dot", ".", "empty path"),
        ("file-then-folder", "meta.json/x", "clashes"),
        ("folder-then-file", "shards", "clashes"),
        ("long-name", "a" * 300, "over 255 bytes"),
        ("encrypted", "", "cannot be read"),
        ("unknown-method", "", "cannot be read"),
        ("corrupt-deflate", "", "cannot be read"),
    ],
)
def test_a_job_zip_with_odd_entries_is_refused(
    client: TestClient,
    job_dir: Path,
    user_token: str,
    assert_nothing_left: None,
    case: str,
    entry: str,
    message: str,
) -> None:
    entries = _job_entries(job_dir)
    if case in ("dot", "file-then-folder", "folder-then-file", "long-name"):
        data = _zip([*entries, (entry, b"x")])
    elif case == "corrupt-deflate":
        data = _patch_first_entry(_zip(entries, zipfile.ZIP_DEFLATED), _corrupt_data)
    else:
        mutate = _encrypted if case == "encrypted" else _unknown_method
        data = _patch_first_entry(_zip(entries), mutate)
    response = submit_zip(client, user_token, data)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["file"] == "job_zip" and message in detail["message"], detail
    if entry:
        assert detail["field"] == entry


@pytest.mark.parametrize(
    ("shard", "field"),
    [
        (_zip([(".", b"x")]), "."),
        (_zip([("shards/site-1", b"x")]), "shards/site-1"),  # a file where the folder is
        (_zip([("shards/site-1/a", b"x"), ("shards/site-1/a/b", b"x")]), "shards/site-1/a/b"),
    ],
)
def test_a_shard_zip_with_odd_entries_is_refused(
    client: TestClient,
    job_dir: Path,
    user_token: str,
    assert_nothing_left: None,
    shard: bytes,
    field: str,
) -> None:
    response = submit_zip(
        client, user_token, zip_folder(job_dir), shards=("site-1.zip", shard, "application/zip")
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["field"] == field


def test_a_file_upload_where_the_job_zip_has_a_folder_is_refused(
    client: TestClient, job_dir: Path, user_token: str, assert_nothing_left: None
) -> None:
    entries = [(n, d) for n, d in _job_entries(job_dir) if n != "meta.json"]
    files = [
        ("job_zip", ("job.zip", _zip([*entries, ("meta.json/x", b"1")]), "application/zip")),
        ("meta.json", ("meta.json", (job_dir / "meta.json").read_bytes(), "application/json")),
    ]
    response = client.post("/api/v1/jobs", files=files, headers=auth(user_token))
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["file"] == "meta.json"


# -- 6. job files: not UTF-8, not JSON (NaN, too deep), escapes no database keeps ----------
def _edit_json(name: str, edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(job_dir: Path) -> None:
        data = json.loads((job_dir / name).read_text())
        edit(data)
        (job_dir / name).write_text(json.dumps(data))

    return apply


def _prepend(name: str, text: bytes) -> Callable[[Path], None]:
    def apply(job_dir: Path) -> None:
        path = job_dir / name
        path.write_bytes(path.read_bytes().replace(b"{", b"{" + text, 1))

    return apply


def _append(name: str, data: bytes) -> Callable[[Path], None]:
    def apply(job_dir: Path) -> None:
        path = job_dir / name
        path.write_bytes(path.read_bytes() + data)

    return apply


@pytest.mark.parametrize(
    ("edit", "file", "field", "message"),
    [
        (_append("custom_client_executor.py", b"# \xff\n"), "custom_client_executor.py", "", "UTF-8"),
        (_append("custom_persistor.py", b"# \xff\n"), "custom_persistor.py", "", "UTF-8"),
        (_append("requirements.txt", b"numpy\xff\n"), "requirements.txt", "", "UTF-8"),
        (_prepend("meta.json", b'"x": NaN, '), "meta.json", "", "NaN"),
        (_prepend("config_fed_client.json", b'"x": Infinity, '), "config_fed_client.json", "", "Infinity"),
        (_prepend("config_fed_server.json", b'"x": ' + b"[" * 100_000 + b"]" * 100_000 + b", "), "config_fed_server.json", "", "deeply"),
        # (meta.json's schema is closed, so unstorable text goes where free keys are allowed)
        (_prepend("config_fed_server.json", b'"x": "\\ud800", '), "config_fed_server.json", "x", "surrogates"),
        (_prepend("config_fed_server.json", b'"x": "\\u0000", '), "config_fed_server.json", "x", "NUL"),
        (_prepend("meta.json", b'"x": 1, '), "meta.json", "x", "unknown key"),
        (_edit_json("meta.json", lambda m: m.update(resource_spec=[1])), "meta.json", "resource_spec", "object"),
        (_edit_json("meta.json", lambda m: m.update(resource_spec={"site-1": {"num_gpus": "2"}})), "meta.json", "resource_spec.site-1.num_gpus", "integer"),
        (_edit_json("meta.json", lambda m: m.update(shards=["site-1"])), "meta.json", "shards", "object"),
    ],
)  # fmt: skip
def test_bad_job_files_are_named(
    client: TestClient,
    job_dir: Path,
    user_token: str,
    assert_nothing_left: None,
    edit: Callable[[Path], None],
    file: str,
    field: str,
    message: str,
) -> None:
    (job_dir / "requirements.txt").write_text("numpy\n")
    edit(job_dir)
    response = submit_zip(client, user_token, zip_folder(job_dir))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert (detail["file"], detail["field"]) == (file, field), detail
    assert message in detail["message"], detail


def test_a_checkpoint_with_a_meta_json_too_deep_to_parse_is_named(
    client: TestClient, job_dir: Path, user_token: str, assert_nothing_left: None
) -> None:
    (job_dir / "meta.json").write_bytes(b"[" * 100_000)
    response = submit_zip(
        client,
        user_token,
        zip_folder(job_dir),
        checkpoint=("model.pt", b"not a checkpoint", "application/octet-stream"),
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["field"] == "model_checkpoint"
