"""What a sandboxed run of job code returns or raises."""

from __future__ import annotations

from dataclasses import dataclass


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
