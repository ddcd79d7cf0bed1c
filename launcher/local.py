"""The whole platform on one machine, as child processes: what `resonfl up` runs, and what
the integration tests start (same code, so the tests exercise the README's first command).

Order: broker (embedded redis-server unless a URL is given) -> migrations -> first admin and
site tokens -> API (uvicorn, `resonfl_server.backend.app:create_app` factory) -> aggregator -> site workers.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from resonfl_server.launcher.embedded_redis import start_embedded_redis
from resonfl_server.launcher.supervise import Child, Supervisor, python_argv, wait_for_port
from resonfl.catalog import evaluate_on_test, make_job
from resonfl.client import Client

PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")


@dataclass
class LocalPlatform:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    sites: int = 2
    redis_url: str | None = None
    database_url: str | None = None
    secret_key: str = ""
    heartbeat_s: float = 10.0
    heartbeat_timeout_s: float = 60.0
    reconcile_every_s: float = 15.0
    threads_per_job: int | None = None
    unsafe_no_sandbox: bool = False
    # extra RESONFL_* settings of every site worker (e.g. RESONFL_REQUIREMENTS_POLICY)
    worker_env: dict[str, str] = field(default_factory=dict)
    # extra `resonfl worker` flags per site: --dataset NAME=/folder, --settings, --require-approval
    site_args: dict[str, list[str]] = field(default_factory=dict)
    supervisor: Supervisor = field(init=False)
    admin_token: str = field(init=False, default="")
    admin_email: str = field(init=False, default="")
    admin_password: str | None = field(init=False, default=None)
    site_tokens: dict[str, str] = field(init=False, default_factory=dict)
    workers: dict[str, Child] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.supervisor = Supervisor(log_dir=self.log_dir)

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def site_names(self) -> list[str]:
        return [f"site-{i}" for i in range(1, self.sites + 1)]

    # -------------------------------------------------------------------------- start/stop
    def start(self, admin_email: str = "admin@localhost") -> None:
        from resonfl_server.backend import cli_admin  # lazy: server parts
        from resonfl_server.backend.core.config import Settings  # lazy: server parts

        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.redis_url:
            self.redis_url, _ = start_embedded_redis(self.supervisor, self.data_dir / "redis")
        settings = Settings.model_validate(self._settings_kwargs())
        self.database_url = settings.database_url
        cli_admin.migrate(settings)
        self.admin_token = cli_admin.ensure_admin(settings, admin_email)
        self.admin_password = cli_admin.ensure_first_password(settings, admin_email)
        self.admin_email = admin_email
        for name in self.site_names:
            self.site_tokens[name] = cli_admin.register_site(settings, name)
        api = self.supervisor.start(
            "api",
            python_argv(
                "-m",
                "uvicorn",
                "resonfl_server.backend.app:create_app",
                "--factory",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ),
            env=self.server_env(),
        )
        wait_for_port(self.host, self.port, 60, api)
        self._wait_healthy(api)
        self.supervisor.start(
            "aggregator",
            python_argv(
                "-m",
                "resonfl_server.launcher",
                "aggregator",
                "--reconcile-every",
                str(self.reconcile_every_s),
                *self._sandbox_flags(),
            ),
            env=self.server_env(),
        )
        for name in self.site_names:
            self.start_worker(name)

    def start_worker(self, site: str) -> Child:
        argv = python_argv(
            "-m",
            "resonfl_server.launcher",
            "worker",
            "--site",
            site,
            "--api",
            self.url,
            "--broker",
            str(self.redis_url),
            "--data-root",
            str(self.data_dir / "sites" / site),
            "--heartbeat",
            str(self.heartbeat_s),
        )
        # All sites share this machine's cores: without a cap every job process would start
        # one thread per core and they would fight (seen: 20x slower training on 2 cores).
        threads = self.threads_per_job or max(1, (os.cpu_count() or 1) // max(1, self.sites))
        argv += ["--threads", str(threads), *self._sandbox_flags(), *self.site_args.get(site, [])]
        # The token travels in a file only this uid reads, never in the environment: a
        # process's environment stays readable in /proc/<pid>/environ (docs/security.md).
        secrets = self._secrets_dir(f"site-{site}", {"resonfl_site_token": self.site_tokens[site]})
        env = {**self._base_env(), **self.worker_env, "RESONFL_SECRETS_DIR": str(secrets)}
        child = self.supervisor.start(f"worker-{site}", argv, env=env)
        self.workers[site] = child
        return child

    def stop(self) -> None:
        self.supervisor.stop_all()

    # -------------------------------------------------------------------------- env
    def _settings_kwargs(self) -> dict[str, object]:
        kwargs: dict[str, object] = {
            "data_dir": self.data_dir,
            "redis_url": self.redis_url,
            "site_heartbeat_timeout_s": self.heartbeat_timeout_s,
        }
        if self.database_url:
            kwargs["database_url"] = self.database_url
        if self.secret_key:
            kwargs["secret_key"] = self.secret_key
        return kwargs

    def _base_env(self) -> dict[str, str]:
        return {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}

    def _sandbox_flags(self) -> list[str]:
        return ["--unsafe-no-sandbox"] if self.unsafe_no_sandbox else []

    def _secrets_dir(self, name: str, values: dict[str, str]) -> Path:
        """A 0700 folder of 0600 files, one per secret setting (pydantic-settings'
        ``secrets_dir``, named by ``RESONFL_SECRETS_DIR``)."""
        folder = self.data_dir / "secrets" / name
        folder.mkdir(parents=True, exist_ok=True)
        folder.parent.chmod(0o700)
        folder.chmod(0o700)
        for key, value in values.items():
            path = folder / key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(value)
            path.chmod(0o600)
        return folder

    def server_env(self) -> dict[str, str]:
        """What the API and the aggregator get (never the site workers). The secret key and
        the database URL are files in RESONFL_SECRETS_DIR, not variables: the aggregator
        starts job code, and a variable would stay in its /proc/<pid>/environ."""
        env = self._base_env()
        secret = {"secret_key", "database_url"}
        for key, value in self._settings_kwargs().items():
            if key not in secret:
                env[f"RESONFL_{key.upper()}"] = str(value)
        values = {"resonfl_database_url": str(self.database_url)}
        if self.secret_key:
            values["resonfl_secret_key"] = self.secret_key
        env["RESONFL_SECRETS_DIR"] = str(self._secrets_dir("server", values))
        for key in ("RESONFL_ENVIRONMENT", "RESONFL_MAX_UPLOAD_BYTES"):
            if key in os.environ:
                env[key] = os.environ[key]
        return env

    def _wait_healthy(self, api: Child, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if api.proc.poll() is not None:
                raise RuntimeError(f"the API exited:\n{self.supervisor.tail(api)}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the API did not become healthy:\n{self.supervisor.tail(api)}")

    # -------------------------------------------------------------------------- demo
    def run_demo(self, num_rounds: int | None = None, timeout_s: float = 3600) -> Path:
        """Submit the digits example through the SDK, wait with a progress bar, download."""
        shards = self.data_dir / "demo" / "shards"
        job = make_job("digits", sites=self.sites, num_rounds=num_rounds, shards_dir=shards)
        client = Client(self.url, self.admin_token)
        job_id = client.submit(job)
        print(f"submitted job {job_id}: {self.url}/jobs/{job_id}")
        client.wait(job_id, timeout=timeout_s)
        target = self.data_dir / "demo" / f"job-{job_id}-checkpoint.pt"
        client.download(job_id, target)
        held_out = evaluate_on_test("digits", target, shards)
        print(
            f"held-out test set (never seen by a site): top-1 {held_out['top1']:.4f}, "
            f"loss {held_out['val_loss']:.4f}"
        )
        return target
