"""One run of job code in a child process of its own (or a pre-started one from a `WarmPool`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from resonfl.runner import confine
from resonfl.runner.confine import Binds, Sandbox, wants_gpus
from resonfl.runner.env import folder_env, scrubbed_env
from resonfl.runner.errors import SandboxCancelled, SandboxRun, SandboxTimeout
from resonfl.runner.pool import WarmPool
from resonfl.runner.procs import (
    Stopped,
    close_pipes,
    kill_group,
    kill_tree,
    read_log,
    wait_for,
)


def run_sandboxed(
    argv: list[str],
    work_dir: Path,
    timeout_s: float,
    env_extra: dict[str, str] | None = None,
    log_path: Path | None = None,
    pool: WarmPool | None = None,
    should_stop: Callable[[], str | None] | None = None,
    poll_s: float = 5.0,
    binds: Binds | None = None,
    sandbox: Sandbox | None = None,
) -> SandboxRun:
    """Run ``argv`` with cwd ``work_dir``; capture stdout+stderr; kill the tree on timeout.

    ``argv`` is ``[python, script, *args]``; with a ``pool`` the script runs in a pre-started
    process (same environment, same isolation), else in a freshly started one.
    ``should_stop`` is asked every ``poll_s`` seconds; a reason it returns (the job was
    cancelled, say) kills the process tree and raises SandboxCancelled.
    The process is confined (see `confine`) to ``work_dir`` (read-write) and ``binds``; files
    named in ``argv`` are bound read-only.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or work_dir / "job.log"
    sandbox = sandbox or (pool.sandbox_now() if pool else confine.current())
    binds = _with_argv_files(argv, Binds.of(rw=[work_dir, *(binds.rw if binds else ())],
                                            ro=binds.ro if binds else ()))
    started = time.monotonic()
    proc = _hand_to_warm(pool, argv, work_dir, env_extra, log_path, binds) if pool else None
    with open(log_path, "ab") as log:
        if proc is None:
            launch = sandbox.launch(argv, binds, work_dir, wants_gpus(env_extra))
            proc = subprocess.Popen(
                launch.argv,
                cwd=work_dir,
                env=scrubbed_env(work_dir, env_extra),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                pass_fds=launch.pass_fds,
                preexec_fn=launch.preexec_fn,
            )
        try:
            returncode = wait_for(proc, started + timeout_s, should_stop, poll_s)
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            text = read_log(log_path)
            raise SandboxTimeout(f"job code ran past its time limit of {timeout_s:g} s", text) from None
        except Stopped as stop:
            kill_tree(proc)
            raise SandboxCancelled(f"stopped: {stop.reason}", read_log(log_path)) from None
        except BaseException:
            kill_tree(proc)
            raise
        finally:
            # A job may leave children behind in its session; never let them outlive the run.
            kill_group(proc.pid)
            close_pipes(proc)
    return SandboxRun(returncode, read_log(log_path), time.monotonic() - started)


def _hand_to_warm(
    pool: WarmPool,
    argv: list[str],
    work_dir: Path,
    env_extra: dict[str, str] | None,
    log_path: Path,
    binds: Binds,
) -> subprocess.Popen[bytes] | None:
    """Give the task to a pre-started process; None when none is ready (start cold)."""
    if len(argv) < 2 or argv[0] != sys.executable:
        return None
    proc = pool.take(env_extra, binds=binds)
    if proc is None or proc.stdin is None:
        return None
    log_path.write_bytes(b"")
    env = folder_env(work_dir)
    pool.sandbox_now().hand_over([*binds.rw, log_path], binds.ro)
    task = {"argv": argv[1:], "cwd": str(work_dir), "env": env, "log": str(log_path)}
    try:
        proc.stdin.write(json.dumps(task).encode() + b"\n")
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        kill_tree(proc)
        return None
    return proc


def _with_argv_files(argv: list[str], binds: Binds) -> Binds:
    """Scripts and files named on the command line are visible (read-only) to the process."""
    extra = [
        a for a in argv[1:]
        if a.startswith("/") and Path(a).exists() and not binds.covers(a)
    ]
    return Binds.of(rw=binds.rw, ro=[*binds.ro, *extra]) if extra else binds
