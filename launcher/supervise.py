"""Start child processes, watch them, and stop every one of them on Ctrl-C or SIGTERM.

Each child runs in its own process group, so stopping a child also stops what it started
(uvicorn's reloader, Celery's pool); the supervisor sends SIGTERM to each group, waits, then
SIGKILLs what is left.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path | None = None


@dataclass
class Supervisor:
    """Owns the children of `resonfl up` (and of the integration tests' fixture)."""

    log_dir: Path | None = None
    children: list[Child] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Child:
        out: int | object = subprocess.DEVNULL
        log_path = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{name}.log"
            out = log_path.open("ab")
        proc = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if hasattr(out, "close"):
            out.close()  # type: ignore[union-attr]
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    def dead(self) -> list[Child]:
        return [c for c in self.children if c.proc.poll() is not None]

    def stop(self, child: Child, grace_s: float = 10.0, sig: int = signal.SIGTERM) -> None:
        _signal_group(child.proc, sig)
        try:
            child.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(child.proc, signal.SIGKILL)
            child.proc.wait(5)
        if child in self.children:
            self.children.remove(child)

    def stop_all(self, grace_s: float = 10.0) -> None:
        """SIGTERM every group at once, then SIGKILL whoever outlives the grace period."""
        for child in reversed(self.children):
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in reversed(self.children):
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait(5)
        self.children.clear()

    def tail(self, child: Child, chars: int = 3000) -> str:
        if child.log_path is None or not child.log_path.is_file():
            return ""
        return child.log_path.read_text(errors="replace")[-chars:]


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Stop(Exception):
    """Raised in the main thread when SIGINT/SIGTERM arrives."""


def raise_on_signals() -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float, child: Child | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child is not None and child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode} while starting")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s:.0f}s")


def python_argv(*args: str) -> list[str]:
    """Run a module of this installation with this interpreter (no reliance on PATH)."""
    return [sys.executable, *args]
