"""`resonfl up`: the banner is the first thing a new user reads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from resonfl_server.launcher.supervise import free_port

pytestmark = pytest.mark.integration


def test_up_prints_its_banner_first_without_alembic_plugin_lines(tmp_path: Path) -> None:
    # Prepare / Execute: the real command, on a free port, until its banner
    proc = subprocess.Popen(
        [sys.executable, "-m", "resonfl.cli", "up", "--port", str(free_port()), "--sites", "1",
         "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines: list[str] = []
    deadline = time.monotonic() + 120
    try:
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if "ResonFL is up" in line:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # Assert
    assert any("ResonFL is up" in line for line in lines), lines
    assert lines[0].startswith("ResonFL is up"), lines
    assert not any("setup plugin" in line for line in lines)
