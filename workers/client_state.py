"""Crash-consistent client state: a round that runs again starts from the state it began with.

A site's STATE_DIR holds what its job carries from round to round (optimizer state, EMA, the
executor's own files; the LR position and the RNG seeds are derived from the round number).
A round that ran but whose update never reached the server (the upload failed for good, the
worker died after training) is sent again; without care the second run would start from the
state the first one already advanced, and the job's result would depend on the fault.

So at the start of each attempt at round N:

    snapshot of N exists   an earlier attempt at N began: restore STATE_DIR from it
    else                   take one (a copy, not hard links: job code may rewrite a file in
                           place), then drop the snapshots of earlier rounds

Snapshots are written beside STATE_DIR under a temporary name and renamed into place, so a
crash while taking one leaves the previous state untouched and no half snapshot.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

SNAPSHOTS = "state-snapshots"


def begin_round(state_dir: Path, round_num: int) -> int:
    """Make `state_dir` hold the state round `round_num` began with; return the attempt
    number (1 for the first run of this round, 2 for a re-run, ...)."""
    root = state_dir.parent / SNAPSHOTS
    snapshot = root / f"round-{round_num}"
    attempts = root / f"round-{round_num}.attempts"
    if snapshot.is_dir():
        _replace_tree(snapshot, state_dir)
    else:
        root.mkdir(parents=True, exist_ok=True)
        _replace_tree(state_dir, snapshot)
        for old in root.iterdir():
            number = _round_of(old.name)
            if number is not None and number < round_num:
                _remove(old)
    attempt = int(attempts.read_text()) + 1 if attempts.is_file() else 1
    attempts.write_text(str(attempt))
    return attempt


def _replace_tree(source: Path, target: Path) -> None:
    """`target` becomes a copy of `source` (empty when `source` does not exist), atomically."""
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    if source.is_dir():
        shutil.copytree(source, staging, symlinks=True)
    else:
        staging.mkdir(parents=True)
    old = target.with_name(f".{target.name}.old.{uuid.uuid4().hex[:8]}")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _round_of(name: str) -> int | None:
    if not name.startswith("round-"):
        return None
    number = name.removeprefix("round-").removesuffix(".attempts")
    return int(number) if number.isdigit() else None
