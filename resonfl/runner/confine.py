"""Confinement of job code with bubblewrap: what a job process can see, reach and use.

Every job process (a site's round, a pre-started one, the server's initial-weights run) is
started through `Sandbox.launch`, which wraps the command in ``bwrap``:

- its own PID, IPC, UTS and network namespaces (no network unless the site allows it), so it
  sees neither the worker's ``/proc/<pid>/environ`` nor any other process, and reaches no port;
- a fresh root: read-only ``/usr`` (and the merged-usr links), the Python install and the venv,
  a few files of ``/etc``, a private ``/tmp``, and only the folders the run needs bound in, at
  the same paths as outside (job folder, STATE_DIR and output folder read-write; DATA_ROOT and
  the global weights read-only); GPUs: the NVIDIA device nodes, nothing more;
- uid/gid 65534 (nobody). A worker running as root gets a user namespace that maps 65534 to
  the real uid 65534, so the process limit counts the job's processes, not root's;
- resource limits (`Limits`, setrlimit before exec): memory, processes, open files, CPU time,
  output size. ``--die-with-parent`` + the PID namespace mean that killing the bwrap process
  (timeout, cancel, a dead worker) takes every process of the job with it, ``setsid`` or not.

Modes: ``require`` (site workers and the aggregator: no bwrap, no job code), ``auto`` (the
local simulator and library use: confined when bwrap works, else a warning) and ``off``
(``--unsafe-no-sandbox``: the operator said so, loudly logged).
"""

from __future__ import annotations

import glob
import logging
import os
import resource
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from resonfl.runner.errors import SandboxError
from resonfl.runner.procs import die_with_parent

log = logging.getLogger("resonfl.sandbox")

NOBODY = 65534
Mode = Literal["require", "auto", "off"]
# /etc files a Python process needs (dynamic linker, users, time zone); never the whole /etc.
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/alternatives",
)
NETWORK_ETC = ("/etc/resolv.conf", "/etc/hosts", "/etc/ssl", "/etc/ca-certificates")
MERGED_USR = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class SandboxUnavailable(SandboxError):
    """bubblewrap cannot run here and the policy requires it: job code is refused."""


def _half_the_memory_mb() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 / 2)
    except (ValueError, OSError):
        return 8192


@dataclass(frozen=True)
class Limits:
    """Per job process. 0 means no limit for that resource.

    ``memory_mb`` caps the data segment (RLIMIT_DATA: heap and private mappings, the memory a
    tensor takes) rather than the address space, which CUDA reserves by the terabyte."""

    memory_mb: int = field(default_factory=_half_the_memory_mb)
    processes: int = 4096  # RLIMIT_NPROC: processes+threads of uid 65534 on this host
    open_files: int = 4096
    cpu_time_s: int = 7 * 24 * 3600
    output_mb: int = 16384  # RLIMIT_FSIZE: the largest file the job may write

    def apply(self) -> None:
        """setrlimit in the child before exec (inherited by bwrap and the job)."""
        pairs = (
            (resource.RLIMIT_DATA, self.memory_mb * 2**20),
            (resource.RLIMIT_NPROC, self.processes),
            (resource.RLIMIT_NOFILE, self.open_files),
            (resource.RLIMIT_CPU, self.cpu_time_s),
            (resource.RLIMIT_FSIZE, self.output_mb * 2**20),
        )
        for which, value in pairs:
            if value > 0:
                resource.setrlimit(which, (value, value))

    def describe(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Binds:
    """Host paths the job process sees, at the same path inside."""

    rw: tuple[str, ...] = ()
    ro: tuple[str, ...] = ()

    @classmethod
    def of(cls, rw: Iterable[str | Path] = (), ro: Iterable[str | Path] = ()) -> Binds:
        return cls(
            tuple(sorted({str(Path(p).resolve()) for p in rw})),
            tuple(sorted({str(Path(p).resolve()) for p in ro})),
        )

    def covers(self, path: str | Path, writable: bool = False) -> bool:
        """True when ``path`` lies inside one of the bound folders."""
        p = Path(path).resolve()
        roots = self.rw if writable else self.rw + self.ro
        return any(p == Path(r) or p.is_relative_to(r) for r in roots)

    def includes(self, other: Binds) -> bool:
        """A process started with these binds can serve a run that needs ``other``."""
        return all(self.covers(p, writable=True) for p in other.rw) and all(
            self.covers(p) for p in other.ro
        )


@dataclass
class Launch:
    """What to hand to `subprocess.Popen` for one confined (or not) job process."""

    argv: list[str]
    pass_fds: tuple[int, ...]
    preexec_fn: Callable[[], None]
    confined: bool


@dataclass(frozen=True)
class Sandbox:
    mode: Mode = "auto"
    limits: Limits = field(default_factory=Limits)
    network: bool = False
    bwrap: str = "bwrap"

    # ---------------------------------------------------------------------------- checks
    def problem(self) -> str | None:
        """Why bwrap cannot confine a job here, or None when it can (checked once)."""
        return _probe(self.bwrap)

    def confines(self) -> bool:
        """Whether job processes will run confined; raises SandboxUnavailable in ``require``
        mode when bwrap cannot run."""
        if self.mode == "off":
            return False
        problem = self.problem()
        if problem is None:
            return True
        if self.mode == "require":
            raise SandboxUnavailable(
                f"job code refused: this machine cannot confine it ({problem}). Install "
                "bubblewrap (Debian: apt-get install bubblewrap) and allow user namespaces, or "
                "start the worker with --unsafe-no-sandbox to run job code unconfined "
                "(it can then read everything this worker can)"
            )
        _warn_once(f"job code runs UNCONFINED: {problem}")
        return False

    def describe(self) -> dict[str, Any]:
        """What applies to job processes, for the job page and `resonfl status`."""
        try:
            confined = self.confines()
        except SandboxUnavailable:
            confined = False
        return {
            "confined": confined,
            "mode": self.mode,
            "network": self.network if confined else True,
            **({"limits": self.limits.describe()} if confined else {}),
        }

    # ---------------------------------------------------------------------------- launch
    def launch(self, argv: list[str], binds: Binds, cwd: Path, gpus: bool) -> Launch:
        """The command line that starts ``argv`` confined to ``binds`` (or as is, mode off)."""
        if not self.confines():
            return Launch(list(argv), (), die_with_parent, False)
        self.hand_over(binds.rw, binds.ro)
        return self._command(argv, binds, cwd, gpus)

    def hand_over(self, paths: Iterable[str | Path], read_only: Iterable[str | Path] = ()) -> None:
        """Make folders (and files) the worker created writable by the job's uid, and the
        read-only inputs readable: a root worker gives the first to 65534 and adds o+r to the
        second (once per path); any other worker's uid is the job's uid outside already."""
        if os.geteuid() == 0 and self.mode != "off" and self.problem() is None:
            _own_by_nobody(str(p) for p in paths)
            _readable_by_others(str(p) for p in read_only)

    def _command(self, argv: list[str], binds: Binds, cwd: Path, gpus: bool) -> Launch:
        userns = _nobody_userns() if os.geteuid() == 0 else None
        cmd = [self.bwrap, *self._namespaces(userns)]
        cmd += self._filesystem(binds, gpus)
        cmd += ["--chdir", str(cwd), "--die-with-parent"]
        if userns is not None:
            # bwrap keeps uid 0 of the mapped namespace to mount; setpriv then becomes 65534
            # for good (no caps, no new privileges) before any job code runs.
            cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--"]
            cmd += [_setpriv(), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
            cmd += ["--inh-caps=-all", "--bounding-set=-all", "--pdeathsig=SIGKILL", "--"]
        else:
            cmd += ["--"]
        limits = self.limits

        def preexec() -> None:
            limits.apply()
            if userns is not None:
                # Join before exec, not with bwrap's --userns: changing credentials clears
                # the parent-death signal, which must be set after it (die_with_parent).
                _join_userns(userns)
            die_with_parent()

        return Launch(cmd + list(argv), (userns,) if userns is not None else (), preexec, True)

    def _namespaces(self, userns: int | None) -> list[str]:
        if userns is not None:
            ns = []  # the child joined the mapped user namespace before exec (see `launch`)
        else:
            ns = ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--disable-userns"]
        ns += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not self.network:
            ns.append("--unshare-net")
        return ns + ["--hostname", "sandbox"]

    def _filesystem(self, binds: Binds, gpus: bool) -> list[str]:
        args = ["--ro-bind", "/usr", "/usr"]
        for link in MERGED_USR:
            if os.path.islink(link):
                args += ["--symlink", os.readlink(link), link]
            elif os.path.isdir(link):
                args += ["--ro-bind", link, link]
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
        # a private, writable /dev/shm: POSIX semaphores and shared memory (DataLoader workers,
        # multiprocessing) need it; --dev leaves it root's, and it is never shared with the host
        args += ["--perms", "1777", "--tmpfs", "/dev/shm"]
        ro = list(_python_roots()) + list(binds.ro)
        etc = ETC_FILES + (NETWORK_ETC if self.network else ())
        # Parents of bound paths are created 0755: bwrap would copy a private parent's mode
        # (e.g. /root 0700 above a pyenv Python) and uid 65534 could not walk through it.
        for parent in _parents([*ro, *binds.rw]):
            args += ["--perms", "0755", "--dir", parent]
        for path in etc:
            args += ["--ro-bind-try", path, path]
        # Outer folders first, so a read-only file inside a writable folder stays read-only.
        mounts = [(p, "--bind") for p in binds.rw]
        mounts += [(p, "--ro-bind") for p in ro if p not in binds.rw]
        for path, how in sorted(mounts, key=lambda m: (m[0].count("/"), m[0])):
            args += [how, path, path]
        if gpus:
            for node in sorted(glob.glob("/dev/nvidia*")):
                args += ["--dev-bind", node, node]
            args += ["--ro-bind-try", "/sys", "/sys"]
        return args


# -------------------------------------------------------------------------- process-wide
_current = Sandbox()
_lock = threading.Lock()


def configure(sandbox: Sandbox) -> None:
    """Set the sandbox every job process of this process uses (a worker does it at start)."""
    global _current
    _current = sandbox
    if sandbox.mode == "off":
        log.warning(
            "!!! --unsafe-no-sandbox: job code runs UNCONFINED, with this worker's uid, files "
            "and network; any job author can read what this worker can !!!"
        )


def current() -> Sandbox:
    return _current


def with_limits(**changes: int) -> Sandbox:
    """The current sandbox with some limits changed (tests, benchmarks)."""
    return replace(_current, limits=replace(_current.limits, **changes))


# -------------------------------------------------------------------------- helpers
_probed: dict[str, str | None] = {}
_warned: set[str] = set()
_userns_fd: int | None = None


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def _probe(bwrap: str) -> str | None:
    with _lock:
        if bwrap in _probed:
            return _probed[bwrap]
    problem = _try_bwrap(bwrap)
    with _lock:
        _probed[bwrap] = problem
    return problem


def _try_bwrap(bwrap: str) -> str | None:
    if not sys.platform.startswith("linux"):
        return "bubblewrap needs Linux"
    if shutil.which(bwrap) is None:
        return f"{bwrap!r} is not installed"
    probe = Sandbox(mode="require", limits=Limits(0, 0, 0, 0, 0), bwrap=bwrap)
    try:
        launch = probe._command(["/usr/bin/true"], Binds(), Path("/"), gpus=False)
    except (OSError, SandboxError, subprocess.SubprocessError) as exc:  # no user namespace
        return f"cannot prepare a user namespace: {exc}"
    try:
        done = subprocess.run(
            launch.argv,
            pass_fds=launch.pass_fds,
            preexec_fn=launch.preexec_fn,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{bwrap} did not start: {exc}"
    if done.returncode != 0:
        return f"{bwrap} failed: {done.stderr.strip()[:300] or done.returncode}"
    return None


def _setpriv() -> str:
    return shutil.which("setpriv") or "/usr/bin/setpriv"


def _nobody_userns() -> int:
    """A user namespace mapping 0 and 65534 to themselves, made once per process.

    Root's own mapping (what bwrap would make) leaves the job's processes owned by root
    outside, where RLIMIT_NPROC does not apply; here they are really uid 65534."""
    global _userns_fd
    with _lock:
        if _userns_fd is not None:
            return _userns_fd
        unshare = shutil.which("unshare")
        if unshare is None:
            raise SandboxError("util-linux 'unshare' is not installed")
        holder = subprocess.Popen(
            [unshare, "--user", "--", "sh", "-c", "read _"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            ns = f"/proc/{holder.pid}/ns/user"
            mine = os.readlink("/proc/self/ns/user")
            for _ in range(500):  # until unshare has made its namespace
                if os.readlink(ns) != mine:
                    break
                threading.Event().wait(0.002)
            else:
                raise SandboxError("unshare --user did not make a user namespace")
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{holder.pid}/{name}", "w") as fh:
                    fh.write(f"0 0 1\n{NOBODY} {NOBODY} 1\n")
            fd = os.open(ns, os.O_RDONLY | os.O_CLOEXEC)
        finally:
            holder.kill()
            holder.wait()
        os.set_inheritable(fd, False)
        _userns_fd = fd
        return fd


def _join_userns(fd: int) -> None:
    import ctypes  # lazy: Linux only

    clone_newuser = 0x10000000
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, clone_newuser) != 0:
        os._exit(126)


def _python_roots() -> list[str]:
    """The interpreter's install and the venv (read-only), wherever they live."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots |= {os.path.realpath(r) for r in roots}
    roots.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    keep = sorted(r for r in roots if r and r != "/" and not r.startswith("/usr"))
    return [r for r in keep if not any(r != o and r.startswith(o + "/") for o in keep)]


def _parents(paths: Iterable[str]) -> list[str]:
    found: set[str] = set()
    for p in paths:
        parent = Path(p).parent
        while str(parent) not in ("/", ""):
            found.add(str(parent))
            parent = parent.parent
    skip = ("/usr", "/proc", "/dev", "/tmp")
    found = {p for p in found if p not in skip and not p.startswith("/usr/")}
    return sorted(found, key=lambda p: (p.count("/"), p))


def _own_by_nobody(paths: Iterable[str]) -> None:
    """A root worker hands the writable folders to uid 65534 (it keeps reading them as root)."""
    for top in paths:
        _chown(top)
        for root, dirs, files in os.walk(top):
            for name in [root, *(os.path.join(root, d) for d in dirs)]:
                _chown(name)
            for f in files:
                _chown(os.path.join(root, f))


_made_readable: set[tuple[str, int]] = set()


def _readable_by_others(paths: Iterable[str]) -> None:
    """Add o+r (o+x on folders) where missing. A folder tree is walked once per inode (a
    dataset can be large); a single file is checked every time (a new round's weights)."""
    for top in paths:
        try:
            st = os.stat(top)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            _add_read(top)
            continue
        if (top, st.st_ino) in _made_readable or top.startswith("/usr/"):
            continue
        for root, _dirs, files in os.walk(top):
            for path in [root, *(os.path.join(root, f) for f in files)]:
                _add_read(path)
        _made_readable.add((top, st.st_ino))


def _add_read(path: str) -> None:
    try:
        st = os.stat(path)
        want = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else 0)
        if st.st_mode & want != want:
            os.chmod(path, st.st_mode | want)
    except OSError:
        pass


def _chown(path: str) -> None:
    try:
        st = os.lstat(path)
        if st.st_uid != NOBODY:
            os.lchown(path, NOBODY, NOBODY)
    except OSError:
        pass


def wants_gpus(env: dict[str, str] | None) -> bool:
    """GPU device nodes are bound in unless the run was given no GPU (CUDA_VISIBLE_DEVICES="")."""
    return (env or {}).get("CUDA_VISIBLE_DEVICES", "all") != ""
