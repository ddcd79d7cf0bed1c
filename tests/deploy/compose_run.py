"""Bring a docker-compose.yml up with the docker CLI, service by service.

Why: Debian's docker-compose (1.29, the only one its archive has) cannot pass
`security_opt: systempaths=unconfined` (the docker CLI turns it into the engine's MaskedPaths
field; compose 1.29 sends it raw and the engine refuses it), and bubblewrap inside the site
containers needs it. Compose v2 (`docker compose`) passes it; where it is installed the test
uses it instead. Here `docker-compose config` still validates the file and resolves every
variable, anchor and default, and this module runs exactly what it printed: image, command,
environment, volumes, file secrets, network mode, security options, health checks, restart
policy, in
`depends_on` order (waiting for `service_healthy`).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml


def sh(
    *argv: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> str:
    done = subprocess.run(
        list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv[:5])}... exited {done.returncode}:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout


class CliCompose:
    """`up`, `start`, `kill`, `exec`, `ps -q`, `logs`, `down -v` for one project."""

    def __init__(self, project: str, file: Path, env: dict[str, str]) -> None:
        self.project, self.file, self.env = project, file, env

    def config(self) -> dict[str, Any]:
        out = sh(
            "docker-compose",
            "-p",
            self.project,
            "-f",
            str(self.file),
            "config",
            cwd=self.file.parent,
            env=self.env,
        )
        return dict(yaml.safe_load(out))

    def name(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def up(self, *services: str) -> None:
        config = self.config()
        wanted = list(services) or list(config["services"])
        for service in self._order(config, wanted):
            if not self._exists(service):
                self._run(config, service)

    def _order(self, config: dict[str, Any], wanted: list[str]) -> list[str]:
        order: list[str] = []

        def visit(name: str) -> None:
            for dep in config["services"][name].get("depends_on", {}):
                visit(dep)
            if name not in order:
                order.append(name)

        for name in wanted:
            visit(name)
        return order

    def _exists(self, service: str) -> bool:
        return bool(sh("docker", "ps", "-aq", "--filter", f"name=^{self.name(service)}$").strip())

    def _run(self, config: dict[str, Any], service: str) -> None:
        svc = config["services"][service]
        for dep, cond in svc.get("depends_on", {}).items():
            if cond.get("condition") == "service_healthy":
                self.wait_healthy(dep)
        argv = [
            "docker",
            "run",
            "-d",
            "--name",
            self.name(service),
            "--label",
            f"com.docker.compose.project={self.project}",
            "--label",
            f"com.docker.compose.service={service}",
        ]
        if svc.get("network_mode"):
            argv += ["--network", svc["network_mode"]]
        if svc.get("restart"):
            argv += ["--restart", svc["restart"]]
        for key, value in (svc.get("environment") or {}).items():
            argv += ["-e", f"{key}={value}"]
        for volume in svc.get("volumes", []):
            source, rest = volume.split(":", 1)
            if not source.startswith(("/", ".")):
                source = f"{self.project}_{source}"
                sh(
                    "docker",
                    "volume",
                    "create",
                    "--label",
                    f"com.docker.compose.project={self.project}",
                    source,
                )
            argv += ["-v", f"{source}:{rest}"]
        for secret in svc.get("secrets", []):  # compose's file secrets are read-only binds
            source = secret["source"] if isinstance(secret, dict) else secret
            target = secret.get("target", source) if isinstance(secret, dict) else secret
            path = Path(config["secrets"][source]["file"])
            argv += ["-v", f"{path}:/run/secrets/{target}:ro"]
        for opt in svc.get("security_opt", []):
            kind, _, value = opt.replace(":", "=", 1).partition("=")
            if kind == "seccomp" and value not in ("unconfined",):
                value = str((self.file.parent / value).resolve())
            argv += ["--security-opt", f"{kind}={value}"]
        health = svc.get("healthcheck") or {}
        test = health.get("test")
        if test:
            cmd = test[1] if test[0] == "CMD-SHELL" else " ".join(test[1:])
            argv += ["--health-cmd", cmd]
        for key, flag in (
            ("interval", "--health-interval"),
            ("retries", "--health-retries"),
            ("start_period", "--health-start-period"),
            ("timeout", "--health-timeout"),
        ):
            if key in health:
                argv += [flag, str(health[key])]
        argv += [svc["image"], *[str(a) for a in svc.get("command", [])]]
        sh(*argv, cwd=self.file.parent)

    def wait_healthy(self, service: str, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = json.loads(
                sh("docker", "inspect", self.name(service), "--format", "{{json .State}}")
            )
            if state.get("Health", {}).get("Status") == "healthy":
                return
            if not state["Running"] and state.get("ExitCode"):
                raise AssertionError(f"{service} exited {state['ExitCode']}:\n{self.logs(service)}")
            time.sleep(1)
        raise AssertionError(f"{service} not healthy after {timeout_s}s:\n{self.logs(service)}")

    def exec(self, service: str, *argv: str) -> str:
        return sh("docker", "exec", self.name(service), *argv)

    def container(self, service: str) -> str:
        return sh("docker", "ps", "-q", "--filter", f"name=^{self.name(service)}$").strip()

    def start(self, service: str) -> None:
        sh("docker", "start", self.name(service))

    def logs(self, service: str | None = None, tail: int = 40) -> str:
        names = [service] if service else self._services()
        parts = []
        for name in names:
            done = subprocess.run(
                ["docker", "logs", "--tail", str(tail), self.name(name)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            parts.append(f"--- {name}\n{done.stdout}{done.stderr}")
        return "\n".join(parts)

    def _services(self) -> list[str]:
        out = sh(
            "docker",
            "ps",
            "-a",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--format",
            '{{.Label "com.docker.compose.service"}}',
        )
        return sorted(set(out.split()))

    def down(self) -> None:
        label = f"label=com.docker.compose.project={self.project}"
        ids = sh("docker", "ps", "-aq", "--filter", label).split()
        if ids:
            subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True, timeout=120)
        vols = sh("docker", "volume", "ls", "-q", "--filter", label).split()
        if vols:
            subprocess.run(
                ["docker", "volume", "rm", "-f", *vols], capture_output=True, timeout=120
            )


class V2Compose(CliCompose):
    """The same calls through compose v2 (`docker compose`), where it is installed."""

    def _compose(self, *args: str, timeout: float = 600) -> str:
        return sh(
            "docker",
            "compose",
            "-p",
            self.project,
            "-f",
            str(self.file),
            *args,
            cwd=self.file.parent,
            env=self.env,
            timeout=timeout,
        )

    def up(self, *services: str) -> None:
        self._compose("up", "-d", "--wait", *services)

    def name(self, service: str) -> str:
        return self._compose("ps", "-a", "--format", "{{.Name}}", service).strip()

    def exec(self, service: str, *argv: str) -> str:
        return self._compose("exec", "-T", service, *argv)

    def down(self) -> None:
        subprocess.run(
            [
                "docker",
                "compose",
                "-p",
                self.project,
                "-f",
                str(self.file),
                "down",
                "-v",
                "-t",
                "5",
            ],
            cwd=self.file.parent,
            env=self.env,
            capture_output=True,
            timeout=300,
        )


def compose_for(project: str, file: Path, env: dict[str, str]) -> CliCompose:
    v2 = subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    return (V2Compose if v2 else CliCompose)(project, file, env)
