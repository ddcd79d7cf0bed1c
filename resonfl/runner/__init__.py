"""Sandboxed execution of job code: one site's round, or the persistor's initial weights.

Modules, one job each: `env` (the allow-listed environment), `procs` (waiting, killing a
process tree, log tails), `pool` (pre-started processes), `run` (one run of job code),
`session` (one process per job kept across its rounds), `tasks` (a site's round and the
initial weights, built on the others).
"""

from resonfl.runner.errors import SandboxCancelled, SandboxError, SandboxRun, SandboxTimeout
from resonfl.runner.pool import WarmPool
from resonfl.runner.run import run_sandboxed
from resonfl.runner.session import JobSession, SessionPool
from resonfl.runner.tasks import (
    InitResult,
    SiteRoundResult,
    WarmInit,
    init_global_weights,
    run_site_round,
)

__all__ = [
    "JobSession",
    "SandboxCancelled",
    "SandboxError",
    "SandboxRun",
    "SandboxTimeout",
    "SessionPool",
    "SiteRoundResult",
    "InitResult",
    "WarmInit",
    "WarmPool",
    "init_global_weights",
    "run_sandboxed",
    "run_site_round",
]
