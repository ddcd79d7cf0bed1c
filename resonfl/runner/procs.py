"""Process plumbing for job processes: waiting with a deadline, killing a whole tree,
reading the tail of a log. No policy here; `run`, `pool` and `session` decide when."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


MAX_LOG_BYTES = 2 * 1024 * 1024


class Stopped(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def wait_for(
    proc: subprocess.Popen[bytes],
    deadline: float,
    should_stop: Callable[[], str | None] | None,
    poll_s: float,
) -> int:
    """Wait for the process until the deadline, asking ``should_stop`` every ``poll_s``."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, 0)
        try:
            return proc.wait(timeout=min(left, poll_s) if should_stop else left)
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                raise
        reason = should_stop() if should_stop else None
        if reason:
            raise Stopped(reason)


def close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass


def read_lines(stream: Any, lines: queue.Queue[bytes | None]) -> None:
    try:
        for line in iter(stream.readline, b""):
            lines.put(line)
    except (OSError, ValueError):
        pass
    lines.put(None)


def kill_strays(pgid: int) -> None:
    """Kill the processes of group ``pgid`` other than its leader (Linux; elsewhere nothing)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit() or int(entry) == pgid:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) == pgid:
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, IndexError, ValueError):
            continue


def kill_sandbox_strays(bwrap_pid: int) -> None:
    """Kill the processes in the sandbox that ``bwrap_pid`` started other than its init and
    the job process (pid 2 inside), wherever they moved to (setsid, double fork)."""
    try:
        with open(f"/proc/{bwrap_pid}/task/{bwrap_pid}/children") as fh:
            init = int(fh.read().split()[0])
        namespace = os.readlink(f"/proc/{init}/ns/pid")
        entries = os.listdir("/proc")
    except (OSError, IndexError, ValueError):
        return
    for entry in entries:
        if not entry.isdigit() or int(entry) in (init, bwrap_pid):
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                continue
            with open(f"/proc/{entry}/status") as fh:
                inner = next(line for line in fh if line.startswith("NSpid:")).split()[-1]
            if int(inner) > 2:
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, StopIteration, ValueError):
            continue


def die_with_parent() -> None:
    """Linux: the job process gets SIGKILL when the worker that started it dies (even by
    SIGKILL), so a killed site worker never leaves a job training on behind its back."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # lazy: Linux only

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    kill_group(proc.pid)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def read_log(path: Path) -> str:
    if not path.exists():
        return ""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if size > MAX_LOG_BYTES:
            fh.seek(size - MAX_LOG_BYTES)
        return fh.read().decode("utf-8", errors="replace")
