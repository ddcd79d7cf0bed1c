"""Issue 7's findings 2 and 3, reproduced against the runner as a site worker uses it.

A "worker" process is started with secrets in its environment (as `resonfl up` used to start
them) and runs job code through `run_sandboxed`. Unconfined (the control, mode ``off``: what
the code did before bubblewrap) the job reads the secrets from /proc, the database file and
another job's folder, and reaches a local port; confined it finds none of them. Fork and
memory bombs stay within the site's limits; a setsid'ed grandchild dies with the run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from attacks import ATTACK, FORK_BOMB, MEMORY_BOMB, SETSID_ESCAPE

from resonfl.runner.confine import Sandbox

pytestmark = pytest.mark.skipif(
    Sandbox(mode="auto").problem() is not None,
    reason=f"bubblewrap cannot run here: {Sandbox(mode='auto').problem()}",
)

SECRET = "s3cret-key-7f1d"
TOKEN = "site-token-9a2b"

WORKER = """
import json, pathlib, sys
from resonfl.runner import confine, run_sandboxed
from resonfl.runner.confine import Limits, Sandbox
mode, limits, work, *argv = sys.argv[1:]
confine.configure(Sandbox(mode=mode, limits=Limits(**json.loads(limits))))
run = run_sandboxed([sys.executable, *argv], pathlib.Path(work), 60)
print(json.dumps({"rc": run.returncode, "log": run.log}))
"""


def run_as_worker(
    tmp_path: Path, mode: str, argv: list[str], limits: dict[str, int] | None = None
) -> dict[str, object]:
    """Start a worker process that holds secrets in its environment; it runs ``argv``."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {
        "PATH": os.environ["PATH"],
        "RESONFL_SECRET_KEY": SECRET,
        "RESONFL_SITE_TOKEN": TOKEN,
    }
    work = tmp_path / "site" / "jobs" / "1" / "rounds" / "0"
    done = subprocess.run(
        [sys.executable, str(worker), mode, json.dumps(limits or {}), str(work), *argv],
        env=env, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 (stands for the API, Redis or PostgreSQL)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


def attack_script(tmp_path: Path, port: int) -> list[str]:
    db = tmp_path / "data" / "resonfl.db"
    other_job = tmp_path / "site" / "jobs" / "2" / "job" / "model_def.py"
    for path, text in ((db, "SQLite format 3"), (other_job, "class Secret: ...")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    cfg = {"markers": [SECRET.encode().hex(), TOKEN.encode().hex()], "paths": [str(db), str(other_job)], "ports": [port]}
    script = tmp_path / "attack.py"
    script.write_text(ATTACK + f"\nprint('REPORT', _json.dumps(attack({cfg!r})))\n")
    return [str(script)]


def report_of(result: dict[str, object]) -> dict[str, object]:
    line = next(x for x in str(result["log"]).splitlines() if x.startswith("REPORT "))
    return dict(json.loads(line.removeprefix("REPORT ")))


def test_unconfined_job_code_reaches_secrets_files_and_ports(tmp_path: Path, listener: int) -> None:
    """The control: without the sandbox the attack works, so the test below can fail."""
    report = report_of(run_as_worker(tmp_path, "off", attack_script(tmp_path, listener)))

    assert set(report["s"]) == {SECRET.encode().hex(), TOKEN.encode().hex()}  # type: ignore[arg-type]
    assert len(report["f"]) == 2 and report["n"] == [listener]  # type: ignore[arg-type]


def test_confined_job_code_finds_no_secret_no_file_no_port(tmp_path: Path, listener: int) -> None:
    report = report_of(run_as_worker(tmp_path, "require", attack_script(tmp_path, listener)))

    assert report["s"] == []  # no /proc/<worker>/environ to read
    assert report["p"] == 0  # no other process visible at all
    assert report["f"] == []  # neither the database file nor another job's folder
    assert report["n"] == []  # no network
    assert report["u"] == 65534


def test_a_fork_bomb_stops_at_the_process_limit(tmp_path: Path) -> None:
    script = tmp_path / "fork.py"
    script.write_text(FORK_BOMB)

    result = run_as_worker(tmp_path, "require", [str(script), "500"], {"processes": 64})

    forks = int(str(result["log"]).split("FORKS")[1].split()[0])
    assert "fork refused" in str(result["log"]) and forks < 64


def test_a_memory_bomb_stops_at_the_memory_limit(tmp_path: Path) -> None:
    script = tmp_path / "memory.py"
    script.write_text(MEMORY_BOMB)

    result = run_as_worker(tmp_path, "require", [str(script), "4096"], {"memory_mb": 1024})

    assert "MEMORY REFUSED" in str(result["log"]), result["log"]


def test_a_setsid_grandchild_dies_with_the_run(tmp_path: Path) -> None:
    token = f"time.sleep(90.{os.getpid()}7)"
    script = tmp_path / "escape.py"
    script.write_text(SETSID_ESCAPE)

    result = run_as_worker(tmp_path, "require", [str(script), token])
    time.sleep(0.5)

    assert "ESCAPED" in str(result["log"])
    assert not _running_with(token)


def _running_with(token: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            state = Path(f"/proc/{entry}/stat").read_text().split(")")[-1].split()[0]
            if state != "Z" and token in Path(f"/proc/{entry}/cmdline").read_bytes().decode(
                errors="replace"
            ):
                found.append(int(entry))
        except (OSError, IndexError):
            continue
    return found
