"""Job processes started ahead of time: Python and torch imported before a task is known."""

from __future__ import annotations

import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from resonfl.runner import confine
from resonfl.runner.confine import Binds, Sandbox, wants_gpus
from resonfl.runner.env import base_env
from resonfl.runner.procs import close_pipes, kill_tree

PoolKey = tuple[tuple[tuple[str, str], ...], Binds]


WARM_SCRIPT = Path(__file__).with_name("warm.py")


class WarmPool:
    """Job processes started ahead of time (Python + torch imported), one per environment.

    Each still runs exactly one task; taking one starts its replacement at once, so the
    import cost overlaps the previous round's upload and aggregation instead of adding to it.
    Processes are started by one long-lived thread of the pool: Linux ties the "die with
    parent" signal to the starting thread, and short-lived worker threads would take their
    pre-started processes down with them.

    ``refill=False`` starts nothing after `fill`: for a caller that knows how many processes
    it needs (the simulator: one per site, kept for the whole run), a replacement would only
    burn a torch import.

    A process starts inside the sandbox (`confine`), so what it can see is fixed at start:
    processes are kept per (environment, binds), and a task only goes to a process whose
    binds cover its folders.
    """

    def __init__(
        self, size: int = 1, refill: bool = True, sandbox: Sandbox | None = None
    ) -> None:
        self.size = size
        self.refill = refill
        self.sandbox = sandbox  # None: the process-wide `confine.current()` at each start
        self._idle: dict[PoolKey, list[subprocess.Popen[bytes]]] = {}
        self._lock = threading.Lock()
        self._requests: queue.Queue[tuple[Callable[[], None], threading.Event] | None] = (
            queue.Queue()
        )
        self._closed = False
        self._thread = threading.Thread(target=self._spawner, name="warm-pool", daemon=True)
        self._thread.start()

    @staticmethod
    def _key(env_extra: dict[str, str] | None, binds: Binds | None = None) -> PoolKey:
        return tuple(sorted((env_extra or {}).items())), binds or Binds()

    def sandbox_now(self) -> Sandbox:
        return self.sandbox or confine.current()

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

    def _start(self, env_extra: dict[str, str] | None, binds: Binds) -> subprocess.Popen[bytes]:
        # stdout is a pipe: a process given a one-round task points fd 1 at the round's log;
        # one serving a job's rounds (keep_stdout) writes its control lines there.
        sandbox = self.sandbox_now()
        script = str(WARM_SCRIPT)
        visible = Binds(binds.rw, tuple(sorted({*binds.ro, script})))
        # The task names its own folder; until then the process waits in its private /tmp.
        launch = sandbox.launch([sys.executable, script], visible, Path("/tmp"), wants_gpus(env_extra))
        proc = subprocess.Popen(
            launch.argv,
            cwd=tempfile.gettempdir(),
            env=base_env(env_extra),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            pass_fds=launch.pass_fds,
            preexec_fn=launch.preexec_fn,
        )
        proc.confined = launch.confined  # type: ignore[attr-defined]
        return proc

    def _top_up(self, env_extra: dict[str, str] | None, binds: Binds | None = None) -> None:
        key = self._key(env_extra, binds)
        with self._lock:
            if self._closed:
                return
            idle = [p for p in self._idle.get(key, []) if p.poll() is None]
            while len(idle) < self.size:
                idle.append(self._start(env_extra, key[1]))
            self._idle[key] = idle

    def fill(
        self, env_extra: dict[str, str] | None = None, wait: bool = True, binds: Binds | None = None
    ) -> None:
        """Start idle processes for this environment (and these binds) up to the pool size."""
        env = dict(env_extra or {})
        self._on_thread(lambda: self._top_up(env, binds), wait)

    def has_idle(self, env_extra: dict[str, str] | None, binds: Binds | None = None) -> bool:
        """A started process for this environment and binds is waiting (it may be importing);
        starts asked for earlier (`fill`) are done first."""
        self._on_thread(lambda: None, wait=True)  # the queue is FIFO: earlier fills are done
        with self._lock:
            return any(p.poll() is None for p in self._idle.get(self._key(env_extra, binds), []))

    def take(
        self,
        env_extra: dict[str, str] | None,
        start: bool = False,
        binds: Binds | None = None,
        refill: bool = True,
    ) -> subprocess.Popen[bytes] | None:
        """An idle pre-started process for this environment and binds, or None; refills
        (unless the pool was made with ``refill=False``, or ``refill`` is False: a job's own
        process is not replaced ahead of time).

        With ``start``, a process is started now (on the pool's thread) when none is idle;
        it pays the whole start, but lives as long as the pool's thread (see above).
        Raises `SandboxUnavailable` when job code may not run here."""
        self.sandbox_now().confines()
        key = self._key(env_extra, binds)
        proc = None
        with self._lock:
            idle = self._idle.get(key, [])
            while idle and proc is None:
                candidate = idle.pop(0)
                if candidate.poll() is None:
                    proc = candidate
                else:
                    close_pipes(candidate)
        if proc is None and start:
            started: list[subprocess.Popen[bytes]] = []

            def start_one() -> None:
                with self._lock:
                    if not self._closed:
                        started.append(self._start(env_extra, key[1]))

            self._on_thread(start_one, wait=True)
            proc = started[0] if started else None
        if refill and self.refill:
            self.fill(env_extra, wait=False, binds=binds)
        return proc

    def discard(self, env_extra: dict[str, str] | None, binds: Binds | None = None) -> None:
        """Stop the idle processes started for this environment and binds (a job that ended
        before using the process prepared for it)."""
        with self._lock:
            procs = self._idle.pop(self._key(env_extra, binds), [])
        for proc in procs:
            kill_tree(proc)
            close_pipes(proc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            procs = [p for idle in self._idle.values() for p in idle]
            self._idle.clear()
        self._requests.put(None)
        for proc in procs:
            kill_tree(proc)
            close_pipes(proc)

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
