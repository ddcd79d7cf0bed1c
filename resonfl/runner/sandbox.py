"""Run untrusted job code in a child process: scrubbed environment, own folder, time limit.

Job code (model_def.py and the job's scripts) never runs inside a platform process. Each call
starts a fresh Python (never a fork, so CUDA initialises cleanly), in its own session so the
whole process tree can be killed on timeout, with an environment rebuilt from an allow-list:
no tokens, database URLs or other server secrets reach it. `JobSession` keeps one such process
for the rounds of one job on one site (never shared between jobs).
"""

from __future__ import annotations

import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resonfl.job import CLIENT_CONFIG, EXECUTOR, META, MODEL_DEF, PERSISTOR, SERVER_CONFIG

# Variables a job process may inherit; everything else is dropped.
ALLOWED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")
JOB_SCRIPTS = (MODEL_DEF, EXECUTOR, PERSISTOR, CLIENT_CONFIG, SERVER_CONFIG, META)
MAX_LOG_BYTES = 2 * 1024 * 1024
WARM_SCRIPT = Path(__file__).with_name("warm.py")


class SandboxError(RuntimeError):
    """Job code failed; ``log`` holds what it printed."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


class SandboxTimeout(SandboxError):
    """Job code ran past its time limit and was killed."""


class SandboxCancelled(SandboxError):
    """The caller asked the run to stop (e.g. the job was cancelled) and it was killed."""


@dataclass
class SandboxRun:
    returncode: int
    log: str
    duration_s: float


@dataclass
class SiteRoundResult:
    weights_path: Path
    samples: int
    metrics: dict[str, float]
    train_s: float
    duration_s: float
    log: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def base_env(env_extra: dict[str, str] | None = None) -> dict[str, str]:
    """The allow-listed environment every job process starts with."""
    env = {k: os.environ[k] for k in ALLOWED_ENV if k in os.environ}
    env.update(
        PYTHONNOUSERSITE="1",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
        PYTHONHASHSEED="0",
    )
    env.update(env_extra or {})
    return env


def folder_env(work_dir: Path) -> dict[str, str]:
    """HOME and temp folders inside the run's own folder."""
    tmp = work_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {"HOME": str(work_dir), "TMPDIR": str(tmp), "MPLCONFIGDIR": str(tmp)}


def scrubbed_env(work_dir: Path, env_extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**base_env(env_extra), **folder_env(work_dir)}


class WarmPool:
    """Job processes started ahead of time (Python + torch imported), one per environment.

    Each still runs exactly one task; taking one starts its replacement at once, so the
    import cost overlaps the previous round's upload and aggregation instead of adding to it.
    Processes are started by one long-lived thread of the pool: Linux ties the "die with
    parent" signal to the starting thread, and short-lived worker threads would take their
    pre-started processes down with them.
    """

    def __init__(self, size: int = 1) -> None:
        self.size = size
        self._idle: dict[tuple[tuple[str, str], ...], list[subprocess.Popen[bytes]]] = {}
        self._lock = threading.Lock()
        self._requests: queue.Queue[tuple[Callable[[], None], threading.Event] | None] = (
            queue.Queue()
        )
        self._closed = False
        self._thread = threading.Thread(target=self._spawner, name="warm-pool", daemon=True)
        self._thread.start()

    @staticmethod
    def _key(env_extra: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((env_extra or {}).items()))

    def _spawner(self) -> None:
        while (request := self._requests.get()) is not None:
            work, done = request
            try:
                work()
            except Exception:  # noqa: BLE001 - a failed start must not end the pool's thread
                pass
            finally:
                done.set()

    def _on_thread(self, work: Callable[[], None], wait: bool) -> None:
        done = threading.Event()
        self._requests.put((work, done))
        if wait:
            done.wait(timeout=30)

    @staticmethod
    def _start(env_extra: dict[str, str] | None) -> subprocess.Popen[bytes]:
        # stdout is a pipe: a process given a one-round task points fd 1 at the round's log;
        # one serving a job's rounds (keep_stdout) writes its control lines there.
        return subprocess.Popen(
            [sys.executable, str(WARM_SCRIPT)],
            cwd=tempfile.gettempdir(),
            env=base_env(env_extra),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_die_with_parent,
        )

    def _top_up(self, env_extra: dict[str, str] | None) -> None:
        key = self._key(env_extra)
        with self._lock:
            if self._closed:
                return
            idle = [p for p in self._idle.get(key, []) if p.poll() is None]
            while len(idle) < self.size:
                idle.append(self._start(env_extra))
            self._idle[key] = idle

    def fill(self, env_extra: dict[str, str] | None = None, wait: bool = True) -> None:
        """Start idle processes for this environment up to the pool size."""
        env = dict(env_extra or {})
        self._on_thread(lambda: self._top_up(env), wait)

    def take(
        self, env_extra: dict[str, str] | None, start: bool = False
    ) -> subprocess.Popen[bytes] | None:
        """An idle pre-started process for this environment, or None; refills either way.

        With ``start``, a process is started now (on the pool's thread) when none is idle;
        it pays the whole start, but lives as long as the pool's thread (see above)."""
        key = self._key(env_extra)
        proc = None
        with self._lock:
            idle = self._idle.get(key, [])
            while idle and proc is None:
                candidate = idle.pop(0)
                if candidate.poll() is None:
                    proc = candidate
                else:
                    _close_pipes(candidate)
        if proc is None and start:
            started: list[subprocess.Popen[bytes]] = []

            def start_one() -> None:
                with self._lock:
                    if not self._closed:
                        started.append(self._start(env_extra))

            self._on_thread(start_one, wait=True)
            proc = started[0] if started else None
        self.fill(env_extra, wait=False)
        return proc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            procs = [p for idle in self._idle.values() for p in idle]
            self._idle.clear()
        self._requests.put(None)
        for proc in procs:
            _kill_tree(proc)
            _close_pipes(proc)

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_sandboxed(
    argv: list[str],
    work_dir: Path,
    timeout_s: float,
    env_extra: dict[str, str] | None = None,
    log_path: Path | None = None,
    pool: WarmPool | None = None,
    should_stop: Callable[[], str | None] | None = None,
    poll_s: float = 5.0,
) -> SandboxRun:
    """Run ``argv`` with cwd ``work_dir``; capture stdout+stderr; kill the tree on timeout.

    ``argv`` is ``[python, script, *args]``; with a ``pool`` the script runs in a pre-started
    process (same environment, same isolation), else in a freshly started one.
    ``should_stop`` is asked every ``poll_s`` seconds; a reason it returns (the job was
    cancelled, say) kills the process tree and raises SandboxCancelled.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or work_dir / "job.log"
    started = time.monotonic()
    proc = _hand_to_warm(pool, argv, work_dir, env_extra, log_path) if pool else None
    with open(log_path, "ab") as log:
        if proc is None:
            proc = subprocess.Popen(
                argv,
                cwd=work_dir,
                env=scrubbed_env(work_dir, env_extra),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                preexec_fn=_die_with_parent,
            )
        try:
            returncode = _wait(proc, started + timeout_s, should_stop, poll_s)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            text = _read_log(log_path)
            raise SandboxTimeout(f"job code ran past its time limit of {timeout_s:g} s", text) from None
        except _Stopped as stop:
            _kill_tree(proc)
            raise SandboxCancelled(f"stopped: {stop.reason}", _read_log(log_path)) from None
        except BaseException:
            _kill_tree(proc)
            raise
        finally:
            # A job may leave children behind in its session; never let them outlive the run.
            _kill_group(proc.pid)
            _close_pipes(proc)
    return SandboxRun(returncode, _read_log(log_path), time.monotonic() - started)


class _Stopped(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _wait(
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
            raise _Stopped(reason)


def _hand_to_warm(
    pool: WarmPool,
    argv: list[str],
    work_dir: Path,
    env_extra: dict[str, str] | None,
    log_path: Path,
) -> subprocess.Popen[bytes] | None:
    """Give the task to a pre-started process; None when none is ready (start cold)."""
    if len(argv) < 2 or argv[0] != sys.executable:
        return None
    proc = pool.take(env_extra)
    if proc is None or proc.stdin is None:
        return None
    log_path.write_bytes(b"")
    task = {"argv": argv[1:], "cwd": str(work_dir), "env": folder_env(work_dir), "log": str(log_path)}
    try:
        proc.stdin.write(json.dumps(task).encode() + b"\n")
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        _kill_tree(proc)
        return None
    return proc


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass


class JobSession:
    """One long-lived job process serving the rounds of ONE job on ONE site.

    The first round takes a pre-started process from the pool (or has the pool's thread start
    one) and turns it into the executor's ``--serve`` loop; later rounds are one request line
    each on its stdin, answered by a ``{"done": round, "rc": code}`` line on its stdout. Each
    round keeps its own folder, log, environment and time limit. A round that fails, crashes,
    runs past its limit or is stopped kills the process (its whole session group); the next
    round starts a fresh one. Never shared between jobs: `SessionPool` keys it by job.
    """

    def __init__(self, pool: WarmPool, env_extra: dict[str, str] | None = None) -> None:
        self.pool = pool
        self.env_extra = dict(env_extra or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.lock = threading.Lock()
        self.last_used = time.monotonic()
        self.starts = 0  # processes this session has started or taken (1 when all went well)
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
    ) -> SandboxRun:
        """Run one round's task in the job process; the same contract as `run_sandboxed`."""
        log_path = log_path or work_dir / "job.log"
        started = time.monotonic()
        log_path.write_bytes(b"")
        request = {
            "task": str(task_path),
            "log": str(log_path),
            "cwd": str(work_dir),
            "env": folder_env(work_dir),
            "round": round_num,
        }
        with self.lock:
            try:
                if self.proc is None or self.proc.poll() is not None:
                    self._start(executor, work_dir, log_path)
                if not self._send(request):  # it died since the last round: start afresh
                    self._start(executor, work_dir, log_path)
                    if not self._send(request):
                        raise SandboxError("could not start the job process", _read_log(log_path))
                returncode = self._wait_done(started + timeout_s, should_stop, poll_s)
            except subprocess.TimeoutExpired:
                self._discard()
                text = _read_log(log_path)
                raise SandboxTimeout(f"job code ran past its time limit of {timeout_s:g} s", text) from None
            except _Stopped as stop:
                self._discard()
                raise SandboxCancelled(f"stopped: {stop.reason}", _read_log(log_path)) from None
            except BaseException:
                self._discard()
                raise
            if returncode != 0:
                self._discard()
            elif self.proc is not None:
                _kill_strays(self.proc.pid)  # children the round left behind in the group
            self.last_used = time.monotonic()
        return SandboxRun(returncode, _read_log(log_path), time.monotonic() - started)

    def _start(self, executor: Path, work_dir: Path, log_path: Path) -> None:
        self._discard()
        proc = self.pool.take(self.env_extra, start=True)
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise SandboxError("could not start the job process (the pool is closed)")
        self.starts += 1
        self.proc = proc
        lines: queue.Queue[bytes | None] = queue.Queue()
        self._lines = lines
        threading.Thread(
            target=_read_lines, args=(proc.stdout, lines), name="job-session", daemon=True
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
                    raise _Stopped(reason) from None
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
            _kill_tree(proc)
            _close_pipes(proc)

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
        self._sessions: dict[tuple[str, tuple[tuple[str, str], ...]], JobSession] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="job-sessions", daemon=True)
        self._reaper.start()

    def session(self, job_key: str, env_extra: dict[str, str] | None = None) -> JobSession:
        key = (str(job_key), WarmPool._key(env_extra))
        evicted: list[JobSession] = []
        with self._lock:
            found = self._sessions.get(key)
            if found is None:
                found = self._sessions[key] = JobSession(self.pool, env_extra)
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


def _read_lines(stream: Any, lines: queue.Queue[bytes | None]) -> None:
    try:
        for line in iter(stream.readline, b""):
            lines.put(line)
    except (OSError, ValueError):
        pass
    lines.put(None)


def _kill_strays(pgid: int) -> None:
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


def _die_with_parent() -> None:
    """Linux: the job process gets SIGKILL when the worker that started it dies (even by
    SIGKILL), so a killed site worker never leaves a job training on behind its back."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    _kill_group(proc.pid)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _read_log(path: Path) -> str:
    if not path.exists():
        return ""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if size > MAX_LOG_BYTES:
            fh.seek(size - MAX_LOG_BYTES)
        return fh.read().decode("utf-8", errors="replace")


def stage_job(job_dir: Path, target: Path) -> Path:
    """Copy the job's scripts and configs into the run's own folder (never run in place)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in JOB_SCRIPTS:
        shutil.copyfile(job_dir / name, target / name)
    for ckpt in ("model_checkpoint.safetensors", "model_checkpoint.pt"):
        if (job_dir / ckpt).is_file():
            shutil.copyfile(job_dir / ckpt, target / ckpt)
    return target


def init_global_weights(
    job_dir: str | Path, out_path: str | Path, work_dir: str | Path, timeout_s: float = 600.0
) -> Path:
    """Run the job's persistor in the sandbox to produce the initial weights (safetensors)."""
    work = Path(work_dir).resolve()
    staged = stage_job(Path(job_dir).resolve(), work / "job")
    out = Path(out_path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(staged / PERSISTOR), "init", "--job-dir", str(staged)]
    run = run_sandboxed(argv + ["--out", str(out)], work, timeout_s)
    if run.returncode != 0 or not out.is_file():
        raise SandboxError(_last_error(run.log, "building the initial model failed"), run.log)
    return out


def run_site_round(
    job_dir: str | Path,
    site: str,
    round_num: int,
    num_rounds: int,
    weights_in: str | Path,
    work_dir: str | Path,
    data_root: str | Path,
    state_dir: str | Path,
    timeout_s: float,
    task_args: dict[str, Any] | None = None,
    env_extra: dict[str, str] | None = None,
    pool: WarmPool | None = None,
    should_stop: Callable[[], str | None] | None = None,
    session: JobSession | None = None,
) -> SiteRoundResult:
    """Train one site for one round in the sandbox; return its update and metrics.

    With a ``session`` (this job on this site) the round runs in the job's long-lived process
    (`JobSession`); else in a process of its own (pre-started by ``pool`` when given)."""
    work = Path(work_dir).resolve()
    if work.exists():
        shutil.rmtree(work)
    staged = stage_job(Path(job_dir).resolve(), work / "job")
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    out_dir = work / "out"
    out_dir.mkdir()
    task = {
        "job_dir": str(staged),
        "site": site,
        "round": round_num,
        "num_rounds": num_rounds,
        "weights_in": str(Path(weights_in).resolve()),
        "weights_out": str(work / "update.safetensors"),
        "result_out": str(work / "result.json"),
        "out_dir": str(out_dir),
        "data_root": str(Path(data_root).resolve()),
        "state_dir": str(state),
        "task_args": dict(task_args or {}),
    }
    task_path = work / "task.json"
    task_path.write_text(json.dumps(task, indent=2), encoding="utf-8")
    if session is not None:
        run = session.run_round(
            staged / EXECUTOR, task_path, work, round_num, timeout_s, should_stop=should_stop
        )
    else:
        run = run_sandboxed(
            [sys.executable, str(staged / EXECUTOR), "--task", str(task_path)],
            work,
            timeout_s,
            env_extra,
            pool=pool,
            should_stop=should_stop,
        )
    result = _read_result(work / "result.json")
    if run.returncode != 0 or "error" in result or not (work / "update.safetensors").is_file():
        reason = result.get("error") or _last_error(run.log, f"exit code {run.returncode}")
        raise SandboxError(f"site {site} round {round_num}: {reason}", run.log)
    try:
        samples = int(result["samples"])
    except (KeyError, TypeError, ValueError):
        raise SandboxError(f"site {site}: result has no integer 'samples'", run.log) from None
    if samples <= 0:
        raise SandboxError(f"site {site}: reported {samples} samples", run.log)
    metrics = {
        k: float(v) for k, v in (result.get("metrics") or {}).items() if _is_number(v)
    }
    return SiteRoundResult(
        weights_path=work / "update.safetensors",
        samples=samples,
        metrics=metrics,
        train_s=float(result.get("train_s", run.duration_s)),
        duration_s=run.duration_s,
        log=run.log,
    )


def _is_number(value: Any) -> bool:
    """A finite int or float: NaN/inf metrics (a diverged site) are dropped, not averaged."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _read_result(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"error": "result.json is not valid JSON"}
    return data if isinstance(data, dict) else {"error": "result.json is not an object"}


def _last_error(log: str, default: str) -> str:
    lines = [line for line in log.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else default
