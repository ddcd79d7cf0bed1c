"""Sandboxed execution of job code: one site's round, or the persistor's initial weights."""

from resonfl.runner.sandbox import (
    JobSession,
    SandboxCancelled,
    SandboxError,
    SandboxTimeout,
    SessionPool,
    SiteRoundResult,
    WarmPool,
    init_global_weights,
    run_sandboxed,
    run_site_round,
)

__all__ = [
    "JobSession",
    "SandboxCancelled",
    "SandboxError",
    "SandboxTimeout",
    "SessionPool",
    "SiteRoundResult",
    "WarmPool",
    "init_global_weights",
    "run_sandboxed",
    "run_site_round",
]
