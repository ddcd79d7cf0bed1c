"""docker-compose.yml and docker/Dockerfile refer only to things that exist: every command is
a real `resonfl` subcommand with valid flags, every RESONFL_* variable is a real setting.
(No Docker engine runs here; this is what can be checked without one.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from resonfl_server.backend.core.config import Settings
from resonfl.cli import build_parser
from resonfl_server.workers.settings import SiteWorkerSettings

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "resonfl:latest"


def compose(name: str = "docker-compose.yml") -> dict[str, Any]:
    """The file as compose reads it with no variables set: defaults taken, required ones 'x'."""
    text = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", (ROOT / name).read_text())
    return dict(yaml.safe_load(re.sub(r"\$\{[^}]*\}", "x", text)))


def our_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if svc.get("image") == IMAGE}


def dockerfile_json(instruction: str) -> list[str]:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    match = re.search(rf"^{instruction} (\[.*\])$", text, re.MULTILINE)
    assert match, f"Dockerfile has no exec-form {instruction}"
    return list(yaml.safe_load(match.group(1)))


def parses(argv: list[str]) -> Any:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`resonfl {' '.join(argv)}` is not a valid command") from exc


def test_the_image_entry_point_is_the_installed_resonfl_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert dockerfile_json("ENTRYPOINT") == ["tini", "--", "resonfl"]  # tini reaps job processes
    assert "resonfl" in scripts
    parses(dockerfile_json("CMD"))


def test_every_service_command_is_a_real_resonfl_subcommand() -> None:
    services = our_services()
    assert {"api", "aggregator", "site-1", "site-2"} <= set(services)
    for name, svc in services.items():
        args = parses([str(a) for a in svc["command"]])
        assert callable(args.func), name


def test_every_resonfl_variable_is_a_real_setting() -> None:
    server_fields = set(Settings.model_fields)
    worker_fields = set(SiteWorkerSettings.model_fields)
    for name, svc in our_services().items():
        is_worker = svc["command"][0] == "worker"
        known = worker_fields if is_worker else server_fields
        for var in svc.get("environment", {}):
            if var == "RESONFL_SECRETS_DIR":  # read by both settings classes' model_config
                continue
            if var.startswith("RESONFL_"):
                field = var.removeprefix("RESONFL_").lower()
                assert field in known, f"{name}: {var} is not a setting ({sorted(known)})"


def test_server_settings_from_compose_are_valid_in_production() -> None:
    env = our_services()["api"]["environment"]
    values = {k.removeprefix("RESONFL_").lower(): str(v) for k, v in env.items()}
    settings = Settings(**values)
    assert settings.environment == "production"
    assert settings.database_url.startswith("postgresql")


def test_site_workers_get_their_own_volume_and_no_server_secret() -> None:
    services = our_services()
    volumes = set()
    for name in ("site-1", "site-2"):
        svc = services[name]
        assert "--token" not in svc["command"], "tokens go in the environment, not in `ps`"
        assert {v for v in svc["environment"] if v.startswith("RESONFL_")} == {
            "RESONFL_API_URL",
            "RESONFL_HEARTBEAT_S",
            "RESONFL_SECRETS_DIR",
        }
        targets = {s["target"] for s in svc["secrets"]}  # files: docs/security.md
        assert targets == {"resonfl_site_token", "resonfl_broker_url"}
        volumes.add(svc["volumes"][0].split(":")[0])
    assert len(volumes) == 2 and not volumes & set(services["api"]["volumes"])
    assert services["aggregator"]["volumes"] == services["api"]["volumes"]


def test_processes_that_start_job_code_get_their_secrets_as_files() -> None:
    services = our_services()
    aggregator = services["aggregator"]
    assert not {"RESONFL_SECRET_KEY", "RESONFL_DATABASE_URL", "RESONFL_REDIS_URL"} & set(
        aggregator["environment"]
    )
    assert set(aggregator["secrets"]) == {
        "resonfl_secret_key",
        "resonfl_database_url",
        "resonfl_redis_url",
    }
    assert aggregator["environment"]["RESONFL_SECRETS_DIR"] == "/run/secrets"


def test_the_gpu_override_gives_each_site_its_own_gpu_and_the_cuda_image() -> None:
    gpu = compose("docker-compose.gpu.yml")["services"]
    ids = set()
    for name in ("site-1", "site-2"):
        (device,) = gpu[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"]
        ids.add(tuple(device["device_ids"]))
        assert "cuda" in gpu[name]["image"]
        assert parses([str(a) for a in gpu[name]["command"]]).gpus == "0"
    assert len(ids) == 2
