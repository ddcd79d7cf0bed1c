"""A job's requirements.txt, installed for real on a site (with `uv`), once per distinct list.

1. **Policy** (`RequirementsPolicy`, the site's choice): ``off`` refuses any job that asks for
   packages; ``allow-list`` installs only packages whose names are listed (direct and
   transitive); ``any`` installs what resolves. Lines that are pip options (``--index-url``,
   ``-e``, ``-r``...) are always refused: the index is the site's choice, not the job's.
2. **Resolve** against the platform's own environment (`uv pip install --dry-run --python
   <this interpreter>` with every installed distribution pinned as a constraint): what the
   platform already has (torch above all) is satisfied in place and never installed again;
   what is left is the exact list of ``name==version`` to add.
3. **Install** that list with ``uv pip install --target <cache>/<digest> --no-deps``: a plain
   folder that the job process gets on its ``PYTHONPATH`` (bound read-only in its sandbox).
   Both steps pass ``--no-build``: wheels only. Building a source distribution runs its
   setup code, unconfined, as the site worker (which can read the site's secret files), so a
   job could name a package whose build steals the site token; installing a wheel runs none.
4. **Cache**: the folder is keyed by a digest of the requirement lines, the package sources
   and the platform (Python, installed distributions), and written atomically with its
   report (``resonfl-env.json``); a second job with the same list reuses it.

A failure raises `RequirementsError` with a message meant for the job's page, e.g. "no route
to the package index".
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

Mode = Literal["off", "allow-list", "any"]
MODES: tuple[Mode, ...] = ("off", "allow-list", "any")
REPORT = "resonfl-env.json"
_PIN = re.compile(r"^\s*([+-])\s+([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
# uv's words when it never reached the index (connection refused, DNS, timeout, proxy)
_NO_ROUTE = (
    "failed to fetch",
    "error sending request",
    "tcp connect error",
    "dns error",
    "connection refused",
    "timed out",
    "network is unreachable",
)


class RequirementsError(Exception):
    """The job's requirements cannot be used on this site (policy, resolution, network)."""


@dataclass(frozen=True)
class RequirementsPolicy:
    """What a site lets jobs install (the site's `RESONFL_REQUIREMENTS_*` settings)."""

    mode: Mode = "off"
    allow: frozenset[str] = frozenset()
    index_url: str | None = None
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    http_retries: int = 3  # uv's retries of a failed request (UV_HTTP_RETRIES)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"requirements policy must be one of {MODES}, not {self.mode!r}")
        object.__setattr__(self, "allow", frozenset(canonicalize_name(n) for n in self.allow))

    def describe(self) -> str:
        if self.mode == "allow-list":
            return f"allow-list ({', '.join(sorted(self.allow)) or 'empty'})"
        return self.mode

    def source_args(self) -> list[str]:
        """uv's options for where packages come from."""
        args: list[str] = []
        if self.no_index:
            args.append("--no-index")
        elif self.index_url:
            args += ["--index-url", self.index_url]
        for link in self.find_links:
            args += ["--find-links", link]
        return args

    def source_text(self) -> str:
        if self.no_index:
            return "find-links " + ", ".join(self.find_links) if self.find_links else "no index"
        return self.index_url or "the default package index (PyPI)"


@dataclass
class EnvReport:
    """What was installed for one requirements list, and how long it took (shown per site on
    the job page)."""

    digest: str
    requirements: list[str]
    packages: list[str]  # name==version added for the job
    satisfied: list[str]  # names the platform already provides (never installed)
    seconds: float  # the build's own time (uv resolve + install)
    cached: bool = False  # this job found the folder built already
    path: str = ""
    policy: str = ""
    error: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def parse_lines(lines: list[str]) -> list[Requirement]:
    """The requirement lines as `Requirement`s; comments and blanks dropped, options refused."""
    out = []
    for raw in lines:
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise RequirementsError(
                f"requirements.txt: {line!r} is a pip option; the site chooses where packages "
                "come from, a job may only name packages"
            )
        try:
            out.append(Requirement(line))
        except InvalidRequirement as exc:
            raise RequirementsError(f"requirements.txt: {line!r} is not a requirement: {exc}") from None
    return out


def check_policy(reqs: list[Requirement], policy: RequirementsPolicy, site: str) -> None:
    """Refuse what the site's policy does not allow (before anything runs)."""
    if not reqs:
        return
    names = ", ".join(r.name for r in reqs)
    if policy.mode == "off":
        raise RequirementsError(
            f"site {site} does not install job requirements (RESONFL_REQUIREMENTS_POLICY=off); "
            f"this job asks for {names}"
        )
    if policy.mode == "allow-list":
        urls = [r.name for r in reqs if r.url]
        if urls:
            raise RequirementsError(f"site {site} refuses direct URLs in requirements: {urls}")
        refused = [r.name for r in reqs if canonicalize_name(r.name) not in policy.allow]
        if refused:
            raise RequirementsError(
                f"site {site} refuses {', '.join(refused)}: not in its allow-list "
                f"(RESONFL_REQUIREMENTS_ALLOW: {', '.join(sorted(policy.allow)) or 'empty'})"
            )


def installed() -> dict[str, str]:
    """The platform's own distributions: canonical name -> version."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist.version)
    return found


def digest(lines: list[str], policy: RequirementsPolicy, platform: dict[str, str]) -> str:
    """Key of the environment folder: same list, same sources, same platform -> same folder."""
    text = json.dumps(
        {
            "requirements": sorted(str(r) for r in parse_lines(lines)),
            "sources": policy.source_args(),
            "python": sys.version,
            "platform": sorted(platform.items()),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def uv_binary() -> str:
    from uv import find_uv_bin  # lazy: only sites that install requirements need it

    return find_uv_bin()


def build_env(
    lines: list[str],
    policy: RequirementsPolicy,
    cache_dir: Path,
    site: str = "this site",
    timeout_s: float = 900.0,
) -> EnvReport | None:
    """The folder for this job's requirements (built now or found in the cache); None when the
    job asks for nothing. Raises `RequirementsError` with a message for the job's page."""
    reqs = parse_lines(lines)
    if not reqs:
        return None
    check_policy(reqs, policy, site)
    platform = installed()
    key = digest(lines, policy, platform)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / key
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two workers on one machine build it once
        if (target / REPORT).is_file():
            report = EnvReport(**json.loads((target / REPORT).read_text("utf-8")))
            report.cached = True
            return report
        started = time.monotonic()
        pins, satisfied = _resolve(reqs, policy, platform, cache_dir, site, timeout_s)
        staging = cache_dir / f".{key}-{uuid.uuid4().hex[:8]}"
        try:
            if pins:
                _install(pins, policy, staging, cache_dir, site, timeout_s)
            else:
                staging.mkdir()
            report = EnvReport(
                digest=key,
                requirements=[str(r) for r in reqs],
                packages=pins,
                satisfied=satisfied,
                seconds=round(time.monotonic() - started, 3),
                path=str(target),
                policy=policy.describe(),
            )
            (staging / REPORT).write_text(json.dumps(report.to_json(), indent=1), "utf-8")
            _read_only(staging)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return report


def _resolve(
    reqs: list[Requirement],
    policy: RequirementsPolicy,
    platform: dict[str, str],
    cache_dir: Path,
    site: str,
    timeout_s: float,
) -> tuple[list[str], list[str]]:
    """(name==version to add, names the platform already satisfies)."""
    work = cache_dir / ".work"
    work.mkdir(exist_ok=True)
    token = uuid.uuid4().hex[:8]
    req_file, constraints = work / f"{token}.in", work / f"{token}.constraints"
    req_file.write_text("".join(f"{r}\n" for r in reqs), "utf-8")
    # the platform's own versions, pinned: a requirement may never move one of them
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(platform.items())), "utf-8")
    try:
        out = _uv(
            ["pip", "install", "--dry-run", "--no-build", "--python", sys.executable,
             "-r", str(req_file), "-c", str(constraints), *policy.source_args()],
            policy, cache_dir, site, timeout_s,
        )
    finally:
        req_file.unlink(missing_ok=True)
        constraints.unlink(missing_ok=True)
    pins: list[str] = []
    removed: list[str] = []
    for line in out.splitlines():
        m = _PIN.match(line)
        if m:
            (pins if m.group(1) == "+" else removed).append(f"{m.group(2)}=={m.group(3)}")
    if removed:  # cannot happen with the constraints above; never let it pass silently
        raise RequirementsError(f"requirements would replace platform packages: {removed}")
    if policy.mode == "allow-list":
        extra = [p for p in pins if canonicalize_name(p.split("==")[0]) not in policy.allow]
        if extra:
            raise RequirementsError(
                f"site {site} refuses {', '.join(extra)} (needed by the job's requirements): "
                "not in its allow-list (RESONFL_REQUIREMENTS_ALLOW)"
            )
    wanted = {canonicalize_name(r.name) for r in reqs}
    satisfied = sorted(str(n) for n in wanted if n in platform)
    return pins, satisfied


def _install(
    pins: list[str],
    policy: RequirementsPolicy,
    target: Path,
    cache_dir: Path,
    site: str,
    timeout_s: float,
) -> None:
    pinned = cache_dir / ".work" / f"{target.name}.txt"
    pinned.write_text("".join(f"{p}\n" for p in pins), "utf-8")
    try:
        _uv(
            ["pip", "install", "--target", str(target), "--no-deps", "--no-build",
             "--python", sys.executable, "-r", str(pinned), *policy.source_args()],
            policy, cache_dir, site, timeout_s,
        )
    finally:
        pinned.unlink(missing_ok=True)


def _uv(
    args: list[str], policy: RequirementsPolicy, cache_dir: Path, site: str, timeout_s: float
) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_", "RESONFL_"))}
    env["UV_CACHE_DIR"] = str(cache_dir / ".uv-cache")
    env["UV_HTTP_RETRIES"] = str(policy.http_retries)
    try:
        proc = subprocess.run(
            [uv_binary(), *args, "--no-config"],
            capture_output=True, text=True, timeout=timeout_s, env=env, check=False,
        )
    except subprocess.TimeoutExpired:
        raise RequirementsError(
            f"site {site}: installing requirements took over {timeout_s:g} s"
        ) from None
    text = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        raise RequirementsError(explain(text, policy, site))
    return text


def explain(uv_output: str, policy: RequirementsPolicy, site: str) -> str:
    """uv's error in a sentence for the job's page (the route to the index first)."""
    lines = [ln.strip() for ln in uv_output.splitlines() if ln.strip()]
    detail = " ".join(ln for ln in lines if ln.startswith(("error", "cause", "hint")))[:600]
    lowered = uv_output.lower()
    if "no-build" in lowered or "building source distributions is disabled" in lowered:
        return (
            f"site {site} installs wheels only (building a source distribution would run its "
            f"setup code on the site, outside the sandbox): {detail or lines[-1:]}"
        )
    if any(word in lowered for word in _NO_ROUTE):
        return (
            f"site {site} has no route to the package index {policy.source_text()}: cannot "
            f"install the job's requirements ({detail or 'no details'})"
        )
    return f"site {site} could not install the job's requirements: {detail or lines[-1:]}"


def _read_only(folder: Path) -> None:
    """The job process (another uid) reads it; nobody writes it after it is built."""
    for root, dirs, files in os.walk(folder):
        for name in files:
            os.chmod(os.path.join(root, name), 0o444)
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o555)
    os.chmod(folder, 0o555)
