"""Job processes kept across rounds: one per (job, site), see `JobSession`."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resonfl.runner.confine import Binds
from resonfl.runner.env import folder_env
from resonfl.runner.errors import SandboxCancelled, SandboxError, SandboxRun, SandboxTimeout
from resonfl.runner.pool import WarmPool
from resonfl.runner.procs import (
    Stopped,
    close_pipes,
    kill_sandbox_strays,
    kill_strays,
    kill_tree,
    read_lines,
    read_log,
)


class JobSession:
    """One long-lived job process serving the rounds of ONE job on ONE site.

    The first round takes a pre-started process from the pool (or has the pool's thread start
    one) and turns it into the executor's ``--serve`` loop; later rounds are one request line
    each on its stdin, answered by a ``{"done": round, "rc": code}`` line on its stdout. Each
    round keeps its own folder, log, environment and time limit. A round that fails, crashes,
    runs past its limit or is stopped kills the process (its whole session group); the next
    round starts a fresh one. Never shared between jobs: `SessionPool` keys it by job.

    The process is confined to ``binds`` (the job's folders on this site, given by the
    caller), or, without them, to the first round's folders; a round whose folders the running
    process cannot see gets a fresh process that can.
    """

    def __init__(
        self, pool: WarmPool, env_extra: dict[str, str] | None = None, binds: Binds | None = None
    ) -> None:
        self.pool = pool
        self.env_extra = dict(env_extra or {})
        self.binds = binds
        self.proc_binds: Binds | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        self.last_used = time.monotonic()
        self.starts = 0  # processes this session has started or taken (1 when all went well)
        self.last_start_warm = False  # the last one was pre-started (taken, not started)
        self._lines: queue.Queue[bytes | None] = queue.Queue()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def run_round(
        self,
        executor: Path,
        task_path: Path,
        work_dir: Path,
        round_num: int,
        timeout_s: float,
        log_path: Path | None = None,
        should_stop: Callable[[], str | None] | None = None,
        poll_s: float = 5.0,
        binds: Binds | None = None,
    ) -> SandboxRun:
        """Run one round's task in the job process; the same contract as `run_sandboxed`.
        ``binds``: the folders this round needs (default: ``work_dir`` read-write)."""
        log_path = log_path or work_dir / "job.log"
        need = binds or Binds.of(rw=[work_dir])
        outside = [p for p in (executor, task_path) if not need.covers(p)]
        if outside:  # the executor and the task file are read where they are
            need = Binds.of(rw=need.rw, ro=[*need.ro, *outside])
        started = time.monotonic()
        log_path.write_bytes(b"")
        request = {
            "task": str(task_path),
            "log": str(log_path),
            "cwd": str(work_dir),
            "env": folder_env(work_dir),
            "round": round_num,
        }
        self.pool.sandbox_now().hand_over([*need.rw, log_path], need.ro)
        with self.lock:
            try:
                alive = self.proc is not None and self.proc.poll() is None
                if not alive or self.proc_binds is None or not self.proc_binds.includes(need):
                    self._start(executor, work_dir, log_path, need)
                if not self._send(request):  # it died since the last round: start afresh
                    self._start(executor, work_dir, log_path, need)
                    if not self._send(request):
                        raise SandboxError("could not start the job process", read_log(log_path))
                returncode = self._wait_done(started + timeout_s, should_stop, poll_s)
            except subprocess.TimeoutExpired:
                self._discard()
                text = read_log(log_path)
                raise SandboxTimeout(f"job code ran past its time limit of {timeout_s:g} s", text) from None
            except Stopped as stop:
                self._discard()
                raise SandboxCancelled(f"stopped: {stop.reason}", read_log(log_path)) from None
            except BaseException:
                self._discard()
                raise
            if returncode != 0:
                self._discard()
            elif self.proc is not None:
                # children the round left behind (in its group, or anywhere in its sandbox)
                if getattr(self.proc, "confined", False):
                    kill_sandbox_strays(self.proc.pid)
                else:
                    kill_strays(self.proc.pid)
            self.last_used = time.monotonic()
        return SandboxRun(returncode, read_log(log_path), time.monotonic() - started)

    def _start(self, executor: Path, work_dir: Path, log_path: Path, need: Binds) -> None:
        self._discard()
        binds = self.binds if self.binds is not None and self.binds.includes(need) else need
        self.last_start_warm = self.pool.has_idle(self.env_extra, binds)  # prepared earlier
        proc = self.pool.take(self.env_extra, start=True, binds=binds, refill=False)
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise SandboxError("could not start the job process (the pool is closed)")
        self.starts += 1
        self.proc, self.proc_binds = proc, binds
        lines: queue.Queue[bytes | None] = queue.Queue()
        self._lines = lines
        threading.Thread(
            target=read_lines, args=(proc.stdout, lines), name="job-session", daemon=True
        ).start()
        argv = [str(executor), "--serve", "--ctl-fd", "1"]
        self._send(
            {"argv": argv, "cwd": str(work_dir), "env": {}, "log": str(log_path), "keep_stdout": True}
        )

    def _send(self, message: dict[str, Any]) -> bool:
        proc = self.proc
        if proc is None or proc.stdin is None:
            return False
        try:
            proc.stdin.write(json.dumps(message).encode() + b"\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            self._discard()
            return False
        return True

    def _wait_done(
        self, deadline: float, should_stop: Callable[[], str | None] | None, poll_s: float
    ) -> int:
        assert self.proc is not None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(self.proc.args, 0)
            try:
                line = self._lines.get(timeout=min(left, poll_s) if should_stop else left)
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired(self.proc.args, 0) from None
                reason = should_stop() if should_stop else None
                if reason:
                    raise Stopped(reason) from None
                continue
            if line is None:  # the process ended without finishing the round (a crash)
                try:
                    code = self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    code = -1
                return code or 1
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and "done" in message:
                rc = message.get("rc", 1)
                return rc if isinstance(rc, int) else 1

    def _discard(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            kill_tree(proc)
            close_pipes(proc)

    def close(self) -> None:
        """End the job process (its whole group); a later round would start a fresh one."""
        with self.lock:
            self._discard()


class SessionPool:
    """Job processes kept across rounds, one per (job, environment); see `JobSession`.

    ``max_sessions`` bounds how many jobs keep a process (least recently used closed first;
    1 on a site worker, so a job between rounds never holds a GPU another job's round needs);
    a session idle for ``idle_timeout_s`` is closed by the pool's own thread.
    """

    def __init__(
        self,
        pool: WarmPool,
        idle_timeout_s: float = 600.0,
        max_sessions: int | None = None,
    ) -> None:
        self.pool = pool
        self.idle_timeout_s = idle_timeout_s
        self.max_sessions = max_sessions
        self._sessions: dict[tuple[str, Any], JobSession] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="job-sessions", daemon=True)
        self._reaper.start()

    def session(
        self, job_key: str, env_extra: dict[str, str] | None = None, binds: Binds | None = None
    ) -> JobSession:
        """This job's session (made on first use); ``binds``: the job's folders here."""
        key = (str(job_key), WarmPool._key(env_extra, binds))
        evicted: list[JobSession] = []
        with self._lock:
            found = self._sessions.get(key)
            if found is None:
                found = self._sessions[key] = JobSession(self.pool, env_extra, binds)
            found.last_used = time.monotonic()
            if self.max_sessions is not None:
                others = sorted(
                    (s for k, s in self._sessions.items() if k != key),
                    key=lambda s: s.last_used,
                )
                while others and len(self._sessions) > self.max_sessions:
                    old = others.pop(0)
                    self._drop(old)
                    evicted.append(old)
        for old in evicted:
            old.close()
        return found

    def _drop(self, session: JobSession) -> None:
        for k, s in list(self._sessions.items()):
            if s is session:
                del self._sessions[k]

    def job_keys(self) -> list[str]:
        """The jobs that hold a process now."""
        with self._lock:
            return sorted({k[0] for k in self._sessions})

    def close_job(self, job_key: str) -> None:
        """The job finished, failed or was cancelled: end its processes."""
        with self._lock:
            gone = [s for k, s in self._sessions.items() if k[0] == str(job_key)]
            for s in gone:
                self._drop(s)
        for s in gone:
            s.close()

    def close_idle(self) -> None:
        now = time.monotonic()
        with self._lock:
            idle = [s for s in self._sessions.values() if now - s.last_used > self.idle_timeout_s]
        for s in idle:
            if s.lock.acquire(blocking=False):  # never one that is running a round
                try:
                    if now - s.last_used > self.idle_timeout_s:
                        s._discard()
                        with self._lock:
                            self._drop(s)
                finally:
                    s.lock.release()

    def _reap(self) -> None:
        while not self._stopped.wait(min(30.0, max(0.1, self.idle_timeout_s / 4))):
            self.close_idle()

    def close(self) -> None:
        self._stopped.set()
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for s in sessions:
            s.close()

    def __enter__(self) -> SessionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
