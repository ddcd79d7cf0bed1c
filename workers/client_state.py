"""Crash-consistent client state: a round that runs again starts from the state it began with.

A site's STATE_DIR holds what its job carries from round to round (optimizer state, EMA, the
executor's own files; the LR position and the RNG seeds are derived from the round number).
A round that ran but whose update never reached the server (the upload failed for good, the
worker died after training) is sent again; without care the second run would start from the
state the first one already advanced, and the job's result would depend on the fault.

So each round N has a snapshot of the state it begins with, beside STATE_DIR:

    prepare_round(N)   right after round N-1's update is uploaded (off the round's hot path:
                       the site waits for the aggregation anyway) the snapshot of N is taken
    begin_round(N)     an earlier attempt at N began: restore STATE_DIR from N's snapshot;
                       else N's snapshot is used as it is when STATE_DIR has not changed since
                       it was taken (a stat of each file against its manifest), or taken now;
                       snapshots of earlier rounds are renamed away (prepare_round deletes
                       them: unlinking large files is not free)

A snapshot never shares a file with STATE_DIR (job code may rewrite a file in place): a file
is copied, except one unchanged since the previous snapshot copied it (same size, mtime,
ctime and inode), which is hard-linked from that snapshot: nothing writes into a snapshot.
Snapshots are written under a temporary name and renamed into place, and a manifest is
written after its snapshot, so a crash leaves the previous state untouched and no half
snapshot is ever trusted.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
from pathlib import Path

SNAPSHOTS = "state-snapshots"
TRASH = ".dropped-"
Manifest = dict[str, list[int]]  # relative path -> [kind, size, mtime_ns, ctime_ns, inode]


def begin_round(state_dir: Path, round_num: int) -> int:
    """Make `state_dir` hold the state round `round_num` began with; return the attempt
    number (1 for the first run of this round, 2 for a re-run, ...)."""
    root = state_dir.parent / SNAPSHOTS
    snapshot = root / f"round-{round_num}"
    attempts = root / f"round-{round_num}.attempts"
    if attempts.is_file() and snapshot.is_dir():
        _replace_tree(snapshot, state_dir)
    elif not (snapshot.is_dir() and _read_manifest(root, round_num) == _manifest(state_dir)):
        _take_snapshot(state_dir, round_num)
    for old in root.iterdir():
        number = _round_of(old.name)
        if number is not None and number < round_num:
            # renamed now, deleted by prepare_round: unlinking large files takes a while
            old.rename(root / f"{TRASH}{uuid.uuid4().hex[:8]}")
    attempt = int(attempts.read_text()) + 1 if attempts.is_file() else 1
    attempts.write_text(str(attempt))
    return attempt


def prepare_round(state_dir: Path, round_num: int) -> None:
    """Take the snapshot round `round_num` will begin with now, while the site is idle (the
    job process has finished round `round_num - 1`), so `begin_round` only checks it."""
    root = state_dir.parent / SNAPSHOTS
    if not (root / f"round-{round_num}.attempts").is_file():
        _take_snapshot(state_dir, round_num)
    for old in root.iterdir():
        if old.name.startswith((TRASH, ".round-")):
            _remove(old)  # earlier rounds, and the staging folder of a crashed snapshot


def _take_snapshot(state_dir: Path, round_num: int) -> None:
    root = state_dir.parent / SNAPSHOTS
    root.mkdir(parents=True, exist_ok=True)
    previous = _latest(root, round_num)
    linked_from = root / f"round-{previous}" if previous is not None else None
    known = _read_manifest(root, previous) if previous is not None else None
    staging = root / f".round-{round_num}.{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    entries: Manifest = {}
    for rel, path, info in _walk(state_dir):
        target = staging / rel
        entries[rel] = _entry(info)
        if stat.S_ISDIR(info.st_mode):
            target.mkdir()
        elif stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(path), target)
        elif linked_from is not None and known is not None and known.get(rel) == entries[rel]:
            os.link(linked_from / rel, target)  # unchanged since that snapshot copied it
        else:
            shutil.copy2(path, target)
    manifest = root / f"round-{round_num}.manifest"
    manifest.unlink(missing_ok=True)  # never pair a new snapshot with an old manifest
    _replace_tree(staging, root / f"round-{round_num}", move=True)
    tmp = manifest.with_name(f".{manifest.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(entries, sort_keys=True))
    os.replace(tmp, manifest)


def _walk(folder: Path) -> list[tuple[str, Path, os.stat_result]]:
    """Every entry under `folder` (symlinks not followed), parents before children."""
    out: list[tuple[str, Path, os.stat_result]] = []
    if not folder.is_dir():
        return out
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in [*dirs, *sorted(files)]:
            path = Path(top) / name
            out.append((path.relative_to(folder).as_posix(), path, os.lstat(path)))
    return out


def _entry(info: os.stat_result) -> list[int]:
    if stat.S_ISDIR(info.st_mode):
        return [0, 0, 0, 0, 0]  # a folder's own times change with its files; they are listed
    kind = 2 if stat.S_ISLNK(info.st_mode) else 1
    return [kind, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]


def _manifest(folder: Path) -> Manifest:
    return {rel: _entry(info) for rel, _, info in _walk(folder)}


def _read_manifest(root: Path, round_num: int) -> Manifest | None:
    try:
        data = json.loads((root / f"round-{round_num}.manifest").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _latest(root: Path, round_num: int) -> int | None:
    """The newest round <= `round_num` with a snapshot and its manifest."""
    rounds = [
        n
        for p in root.iterdir()
        if p.is_dir() and (n := _round_of(p.name)) is not None and n <= round_num
    ]
    for n in sorted(rounds, reverse=True):
        if (root / f"round-{n}.manifest").is_file():
            return n
    return None


def _replace_tree(source: Path, target: Path, move: bool = False) -> None:
    """`target` becomes a copy of `source` (empty when `source` does not exist), atomically;
    with `move`, `source` itself (a staging folder beside it) is renamed into place."""
    if move:
        staging = source
    else:
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
    number = name.removeprefix("round-").removesuffix(".attempts").removesuffix(".manifest")
    return int(number) if number.isdigit() else None
