"""docker-compose.yml for real: the images are built (base image made with debootstrap where no
registry is reachable), PostgreSQL, Redis with a password, the API (migrating first), the
aggregator and two site workers come up in their own containers on the host's network at
ports of their own; the digits job is submitted with the SDK from the host, one site's
container is SIGKILLed mid-round and started again, the job finishes and its checkpoint
downloads and learned. Everything is torn down, volumes included.

Skipped, with the reason printed, where no Docker engine can run (`scripts/docker_daemon.sh`
says why). Numbers (build, compose up to finished job) go to $RESONFL_TEST_OUTPUT.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from compose_run import compose_for

from resonfl.catalog import evaluate_on_test, make_job
from resonfl.client import Client
from resonfl_server.launcher.supervise import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IMAGE, SERVICES = "resonfl:latest", "resonfl-services:bookworm"
NUM_ROUNDS = 4


def run(*argv: str, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    done = subprocess.run(
        list(argv), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv[:4])}... exited {done.returncode}:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


def write_secrets(*args: str, env: dict[str, str]) -> None:
    run("bash", "scripts/compose_secrets.sh", *args, env=env)


def skip(reason: str) -> None:
    print(f"\nSKIPPED compose stack: {reason}", file=sys.stderr)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def images() -> dict[str, float]:
    """Start dockerd if needed (or skip, saying why); build the images; time the build."""
    if not shutil.which("docker"):
        skip("docker is not installed (.ci/run installs docker.io)")
    if not shutil.which("docker-compose"):
        skip("docker-compose is not installed (.ci/run installs it; it validates the file)")
    daemon = subprocess.run(
        ["bash", "scripts/docker_daemon.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    if daemon.returncode != 0:
        skip(f"dockerd cannot run here: {daemon.stderr.strip()[-500:]}")
    start = time.monotonic()
    run("nice", "-n", "10", "bash", "scripts/docker_build.sh", IMAGE, timeout=1800)
    built = time.monotonic() - start
    run(
        "nice",
        "-n",
        "10",
        "docker",
        "build",
        "--network",
        "host",
        "-q",
        "-f",
        "docker/services.Dockerfile",
        "-t",
        SERVICES,
        "--build-arg",
        "BASE_IMAGE=resonfl-base:bookworm",
        ".",
        timeout=900,
    )
    size = int(run("docker", "image", "inspect", IMAGE, "--format", "{{.Size}}").strip())
    return {
        "build_s": built,
        "services_build_s": time.monotonic() - start - built,
        "image_bytes": size,
    }


class Stack:
    def __init__(self, secrets_dir: Path) -> None:
        self.project = f"resonfl-ci-{secrets.token_hex(4)}"
        self.api_port, pg, redis = free_port(), free_port(), free_port()
        password = secrets.token_hex(16)
        self.env = {
            **os.environ,
            "RESONFL_SECRET_KEY": secrets.token_hex(32),
            "POSTGRES_PASSWORD": secrets.token_hex(16),
            "REDIS_PASSWORD": password,
            "POSTGRES_IMAGE": SERVICES,
            "REDIS_IMAGE": SERVICES,
            "IMAGE": IMAGE,
            "API_PORT": str(self.api_port),
            "POSTGRES_PORT": str(pg),
            "REDIS_PORT": str(redis),
            "RESONFL_API_URL": f"http://127.0.0.1:{self.api_port}",
            "RESONFL_HEARTBEAT_S": "1",
            "RESONFL_SITE_HEARTBEAT_TIMEOUT_S": "10",
            "SECRETS_DIR": str(secrets_dir),
        }
        self.broker_url = f"redis://:{password}@127.0.0.1:{redis}/0"
        self.compose = compose_for(self.project, ROOT / "docker-compose.yml", self.env)
        self.url = self.env["RESONFL_API_URL"]


@pytest.fixture
def stack(images: dict[str, float], tmp_path: Path) -> Iterator[Stack]:
    st = Stack(tmp_path / "secrets")
    try:
        yield st
    except BaseException:
        print(st.compose.logs(), file=sys.stderr)
        raise
    finally:
        out = os.environ.get("RESONFL_TEST_OUTPUT")
        if out:
            Path(out, "compose-stack.log").write_text(st.compose.logs(tail=200))
        st.compose.down()


def wait_healthy(url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the API at {url} never became healthy")


def wait_for(client: Client, job_id: int, pred: Any, what: str, timeout_s: float = 900) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.status(job_id)
        if pred(job):
            return job
        assert job["status"] not in ("failed", "cancelled"), job.get("error")
        time.sleep(0.5)
    raise AssertionError(f"job {job_id}: {what} did not happen in {timeout_s}s")


def site_state(job: dict, round_num: int, site: str) -> str | None:
    for rnd in job["rounds"]:
        if rnd["number"] == round_num:
            for res in rnd["results"]:
                if res["site"] == site:
                    return str(res["status"])
    return None


def test_the_compose_stack_trains_digits_and_survives_a_killed_site_container(
    stack: Stack, images: dict[str, float], tmp_path: Path
) -> None:
    write_secrets("server", env=stack.env)
    for site in ("site-1", "site-2"):  # placeholders until the sites are registered
        write_secrets("site", site, "-", "-", env=stack.env)
    up_at = time.monotonic()
    stack.compose.up("postgres", "redis", "api")
    wait_healthy(stack.url)
    admin = stack.compose.exec("api", "resonfl", "create-admin", "--email", "ci@example.org")
    token = admin.strip().splitlines()[-1]
    for site in ("site-1", "site-2"):
        out = stack.compose.exec("api", "resonfl", "register-site", site)
        write_secrets("site", site, out.strip().splitlines()[-1], stack.broker_url, env=stack.env)
    stack.compose.up()

    client = Client(stack.url, token)
    shards = tmp_path / "shards"
    job = make_job("digits", sites=2, num_rounds=NUM_ROUNDS, shards_dir=shards)
    job_id = int(client.submit(job))
    submitted_at = time.monotonic()

    wait_for(
        client,
        job_id,
        lambda j: site_state(j, 1, "site-1") == "training",
        "site-1 training round 1",
    )
    run("docker", "kill", stack.compose.container("site-1"))  # SIGKILL, as a crash would
    time.sleep(2)
    stack.compose.start("site-1")

    done = wait_for(client, job_id, lambda j: j["status"] == "finished", "finish")
    finished_at = time.monotonic()
    assert [r["status"] for r in done["rounds"]] == ["done"] * NUM_ROUNDS
    target = tmp_path / "checkpoint.pt"
    client.download(job_id, target)
    held_out = evaluate_on_test("digits", target, shards)
    assert held_out["top1"] > 0.5, held_out  # ten classes: chance is 0.1
    for service in ("site-1", "site-2", "aggregator"):  # bwrap works inside the containers
        assert "job code runs confined" in stack.compose.logs(service, tail=400), service
    for service in ("site-1", "site-2", "aggregator"):  # their secrets are files, not variables
        env = run(
            "docker",
            "inspect",
            stack.compose.container(service),
            "--format",
            "{{json .Config.Env}}",
        )
        for secret in (
            stack.env["RESONFL_SECRET_KEY"],
            stack.env["REDIS_PASSWORD"],
            stack.env["POSTGRES_PASSWORD"],
        ):
            assert secret not in env, f"{service} has a secret in its environment"

    # Each site has its own volume and, besides it, only its two secret files: no site
    # container mounts the server's data.
    for site in ("site-1", "site-2"):
        mounts = run(
            "docker",
            "inspect",
            stack.compose.container(site),
            "--format",
            "{{range .Mounts}}{{.Destination}}={{.Name}};{{end}}",
        )
        found = dict(m.split("=", 1) for m in mounts.strip().rstrip(";").split(";"))
        assert found.pop("/site-data").endswith(f"_{site}-data"), mounts
        assert sorted(found) == [
            "/run/secrets/resonfl_broker_url",
            "/run/secrets/resonfl_site_token",
        ], mounts
    numbers = {
        **images,
        "up_to_finished_s": finished_at - up_at,
        "submit_to_finished_s": finished_at - submitted_at,
        "rounds": NUM_ROUNDS,
        "top1": held_out["top1"],
    }
    print(f"\ncompose stack: {json.dumps(numbers)}")
    out = os.environ.get("RESONFL_TEST_OUTPUT")
    if out:
        Path(out, "compose_stack.json").write_text(json.dumps(numbers, indent=2))
