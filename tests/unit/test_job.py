"""The six-file job: deterministic rendering, round trip, and errors that name file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resonfl.config import FederationConfig, ModelConfig, TrainingConfig
from resonfl.job import JOB_FILES, Job, JobValidationError, template_text


def make_job(source: str, **fed: object) -> Job:
    return Job(
        name="tiny",
        model=ModelConfig(source=source, args={"width": 8}),
        training=TrainingConfig(lr=0.01, extra={"AUGMENT": "flip"}),
        federation=FederationConfig(num_rounds=3, sites=["site-1", "site-2"], **fed),
    )


def test_render_writes_the_six_files_with_format_version_2(tmp_path: Path, tiny_model_def: str) -> None:
    out = make_job(tiny_model_def).render(tmp_path / "job")

    assert sorted(p.name for p in out.iterdir()) == sorted(JOB_FILES)
    for name in ("config_fed_client.json", "config_fed_server.json", "meta.json"):
        assert json.loads((out / name).read_text())["format_version"] == 2
    client = json.loads((out / "config_fed_client.json").read_text())
    assert client["executors"][0]["executor"]["args"]["lr"] == 0.01
    assert client["executors"][0]["executor"]["args"]["extra"] == {"AUGMENT": "flip"}
    server = json.loads((out / "config_fed_server.json").read_text())
    ids = [c["id"] for c in server["components"]]
    assert ids == ["persistor", "model", "shareable_generator", "aggregator"]
    assert server["workflows"][0]["args"]["num_rounds"] == 3


def test_rendering_is_deterministic_and_round_trips(tmp_path: Path, tiny_model_def: str) -> None:
    job = make_job(tiny_model_def)
    first = job.render(tmp_path / "a")
    loaded = Job.load(first)
    second = loaded.render(tmp_path / "b")

    for name in JOB_FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert loaded.training == job.training
    assert loaded.federation.model_dump(exclude={"min_clients"}) == job.federation.model_dump(
        exclude={"min_clients"}
    )
    assert loaded.federation.effective_min_clients == job.federation.effective_min_clients


def test_custom_scripts_are_the_platform_templates(tmp_path: Path, tiny_model_def: str) -> None:
    out = make_job(tiny_model_def).render(tmp_path / "job")

    for name in ("custom_client_executor.py", "custom_persistor.py"):
        assert (out / name).read_text() == template_text(name)


def test_missing_class_names_model_def_and_field(tiny_model_def: str) -> None:
    job = make_job(tiny_model_def)
    job.model.class_name = "Missing"

    with pytest.raises(JobValidationError) as err:
        job.validate()
    assert (err.value.file, err.value.field) == ("model_def.py", "class_name")


def test_train_fn_with_wrong_arity_is_rejected(tiny_model_def: str) -> None:
    source = tiny_model_def.replace("def fl_train_model(model, env, out_dir, logger)", "def fl_train_model(model)")

    with pytest.raises(JobValidationError, match="must take 4 arguments"):
        make_job(source).validate()


def test_unknown_aggregator_path_is_a_server_config_error(tiny_model_def: str) -> None:
    with pytest.raises(JobValidationError) as err:
        make_job(tiny_model_def, aggregator_path="resonfl.fl.nope.Missing").validate()
    assert (err.value.file, err.value.field) == ("config_fed_server.json", "aggregator_path")


def test_bad_json_names_the_file(tmp_path: Path, tiny_model_def: str) -> None:
    out = make_job(tiny_model_def).render(tmp_path / "job")
    (out / "meta.json").write_text("{not json")

    with pytest.raises(JobValidationError) as err:
        Job.load(out)
    assert err.value.file == "meta.json"
    assert "not valid JSON" in err.value.message


def test_bad_training_value_names_the_field(tmp_path: Path, tiny_model_def: str) -> None:
    out = make_job(tiny_model_def).render(tmp_path / "job")
    client = json.loads((out / "config_fed_client.json").read_text())
    client["executors"][0]["executor"]["args"]["lr"] = -1
    (out / "config_fed_client.json").write_text(json.dumps(client))

    with pytest.raises(JobValidationError) as err:
        Job.load(out)
    assert err.value.file == "config_fed_client.json"
    assert err.value.field == "executors[0].executor.args.lr"


def test_missing_file_is_named(tmp_path: Path, tiny_model_def: str) -> None:
    out = make_job(tiny_model_def).render(tmp_path / "job")
    (out / "custom_persistor.py").unlink()

    with pytest.raises(JobValidationError) as err:
        Job.load(out)
    assert err.value.file == "custom_persistor.py"


def test_min_clients_above_site_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="min_clients=3 exceeds"):
        FederationConfig(sites=["a", "b"], min_clients=3)


def test_workflow_args_are_checked_at_load(tiny_model_def: str) -> None:
    with pytest.raises(JobValidationError) as err:
        make_job(tiny_model_def, workflow_args={"bogus": 1}).validate()
    assert err.value.field == "workflows[0].args"


def test_a_site_loads_its_own_view_without_the_other_shards(tmp_path: Path, tiny_model_def: str) -> None:
    for site in ("site-1", "site-2"):
        (tmp_path / "data" / site).mkdir(parents=True)
    job = make_job(tiny_model_def)
    job.shards = {s: tmp_path / "data" / s for s in ("site-1", "site-2")}
    out = job.render(tmp_path / "job")
    import shutil

    shutil.rmtree(out / "shards" / "site-2")  # what a site's bundle looks like

    with pytest.raises(JobValidationError):
        Job.load(out)
    assert set(Job.load(out, site="site-1").shards) == {"site-1"}


@pytest.mark.parametrize("variant", ["bom", "crlf"])
def test_model_def_with_a_bom_or_crlf_loads_and_renders_the_same_bytes(
    tmp_path: Path, tiny_model_def: str, variant: str
) -> None:
    source = "\ufeff" + tiny_model_def if variant == "bom" else tiny_model_def.replace("\n", "\r\n")
    first = make_job(source).render(tmp_path / "a")

    second = Job.load(first).render(tmp_path / "b")

    assert (first / "model_def.py").read_bytes() == (second / "model_def.py").read_bytes()


def test_a_model_def_that_is_not_utf8_is_named(tmp_path: Path, tiny_model_def: str) -> None:
    out = make_job(tiny_model_def).render(tmp_path / "job")
    (out / "model_def.py").write_bytes(b"# \xff\xfe\n")

    with pytest.raises(JobValidationError, match="not UTF-8"):
        Job.load(out)


@pytest.mark.parametrize(
    ("field", "value"),
    [("args", {"width": 16}), ("path", "model_def.Other")],
)
def test_model_components_that_differ_between_the_two_configs_are_refused_naming_both(
    tmp_path: Path, tiny_model_def: str, field: str, value: object
) -> None:
    # Prepare: a hand-edited server config builds another model than the sites train
    out = make_job(tiny_model_def + "\n\nclass Other(Net):\n    pass\n").render(tmp_path / "job")
    server = json.loads((out / "config_fed_server.json").read_text())
    next(c for c in server["components"] if c["id"] == "model")[field] = value
    (out / "config_fed_server.json").write_text(json.dumps(server))
    # Execute
    with pytest.raises(JobValidationError) as err:
        Job.load(out)
    # Assert
    assert "config_fed_client.json" in str(err.value)
    assert "config_fed_server.json" in str(err.value)
    assert err.value.field == "components[model]"


def test_a_server_config_without_its_model_component_is_refused(
    tmp_path: Path, tiny_model_def: str
) -> None:
    out = make_job(tiny_model_def).render(tmp_path / "job")
    server = json.loads((out / "config_fed_server.json").read_text())
    server["components"] = [c for c in server["components"] if c["id"] != "model"]
    (out / "config_fed_server.json").write_text(json.dumps(server))

    with pytest.raises(JobValidationError) as err:
        Job.load(out)
    assert err.value.file == "config_fed_server.json"
    assert err.value.field == "components[model]"


def test_meta_names_the_sites_dataset_and_loads_it_back(tmp_path: Path, tiny_model_def: str) -> None:
    job = make_job(tiny_model_def, dataset="chest-xray")
    folder = job.render(tmp_path / "j")
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["datasets"] == {site: "chest-xray" for site in job.federation.sites}
    assert Job.load(folder).federation.dataset == "chest-xray"
    assert Job.load(folder, site=job.federation.sites[0]).federation.dataset == "chest-xray"


@pytest.mark.parametrize(
    ("datasets", "field", "message"),
    [
        ([], "datasets", "must be an object"),
        ({"site-1": "a b"}, "datasets.site-1", "dataset name"),
        ({"site-1": "x"}, "datasets", "for every site"),
        ({"site-1": "x", "site-2": "y"}, "datasets", "same dataset, not x, y"),
    ],
)
def test_a_bad_datasets_map_in_meta_is_named(
    tmp_path: Path, tiny_model_def: str, datasets: object, field: str, message: str
) -> None:
    folder = make_job(tiny_model_def).render(tmp_path / "j")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "datasets": datasets}))
    with pytest.raises(JobValidationError) as caught:
        Job.load(folder)
    assert (caught.value.file, caught.value.field) == ("meta.json", field)
    assert message in caught.value.message


def test_a_job_on_the_sites_data_ships_no_shards(tmp_path: Path, tiny_model_def: str) -> None:
    (tmp_path / "s").mkdir()
    job = make_job(tiny_model_def, dataset="cxr").model_copy(
        update={"shards": {"site-1": tmp_path / "s"}}
    )
    with pytest.raises(JobValidationError, match="own dataset 'cxr'; ship no shards"):
        job.validate()
