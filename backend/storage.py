"""The artifact store: content written once under data_dir, addressed by an opaque key.

Writes are atomic (temp file + rename), so a reader never sees half a file and a crash leaves
only a temp file behind. Each job also gets a workspace, data_dir/jobs/<id>/, holding the job
folder (`job/`), the persistor's `files_out/` (GLOBAL_MODEL*.pt) and `model_out/`
(checkpoint.pt, the Download button's file).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

_KEY_RE = re.compile(r"^[0-9a-f]{32}$")
CHUNK = 1 << 20


class ArtifactTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than the limit of {limit} bytes")
        self.limit = limit


class ArtifactWriter:
    """One artifact being written: `write` chunks (sha256 and size kept as they pass), then
    `commit`. Used as a context manager, an uncommitted file is removed on exit."""

    def __init__(self, tmp: Path, target: Path, key: str, max_bytes: int | None) -> None:
        self.tmp, self.target, self.key, self.max_bytes = tmp, target, key, max_bytes
        self.digest = hashlib.sha256()
        self.size = 0
        self._out: BinaryIO | None = None

    def __enter__(self) -> ArtifactWriter:
        self._out = self.tmp.open("wb")
        return self

    def write(self, chunk: bytes) -> None:
        assert self._out is not None, "use ArtifactWriter as a context manager"
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise ArtifactTooLarge(self.max_bytes)
        self.digest.update(chunk)
        self._out.write(chunk)

    def commit(self, durable: bool = True) -> tuple[str, str, int]:
        """Close, (fsync,) rename into place; return (key, sha256, size)."""
        assert self._out is not None
        self._out.flush()
        if durable:
            os.fsync(self._out.fileno())
        self._out.close()
        self.target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, self.target)
        return self.key, self.digest.hexdigest(), self.size

    def __exit__(self, *exc: object) -> None:
        if self._out is not None and not self._out.closed:
            self._out.close()
        self.tmp.unlink(missing_ok=True)


class ArtifactStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir).resolve()
        self.artifacts = self.root / "artifacts"
        self.tmp = self.root / "tmp"
        self.jobs = self.root / "jobs"
        for folder in (self.artifacts, self.tmp, self.jobs):
            folder.mkdir(parents=True, exist_ok=True)

    # -- artifacts -------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        if not _KEY_RE.fullmatch(key):
            raise KeyError(f"not an artifact key: {key!r}")
        return self.artifacts / key[:2] / key

    def open(self, key: str) -> BinaryIO:
        return self.path(key).open("rb")

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def put(
        self,
        stream: BinaryIO | Iterable[bytes],
        max_bytes: int | None = None,
        durable: bool = True,
    ) -> tuple[str, str, int]:
        """Store a stream (file object or iterable of chunks); return (key, sha256, size).

        `durable` fsyncs before the rename: for what must survive a power cut (the global
        weights of a round). A site's update is re-sent if lost, so it skips the fsync."""
        chunks = iter(lambda: stream.read(CHUNK), b"") if hasattr(stream, "read") else stream
        with self.writer(max_bytes) as out:
            for chunk in chunks:
                out.write(chunk)
            return out.commit(durable=durable)

    def writer(self, max_bytes: int | None = None) -> ArtifactWriter:
        """An artifact written chunk by chunk (e.g. from a request body as it arrives), hashed
        as it is written; `commit()` moves it into place, leaving without it removes it."""
        key = uuid.uuid4().hex
        return ArtifactWriter(self.tmp / f"{key}.part", self.path(key), key, max_bytes)

    def adopt(self, path: Path, sha256: str) -> tuple[str, str, int]:
        """Move a finished file from this store's scratch into the store (no copy, no second
        hash: the writer hashed it; fsynced, as this is used for the round's global weights).
        Returns (key, sha256, size)."""
        path = Path(path)
        if not path.resolve().is_relative_to(self.tmp):
            raise ValueError(f"{path} is not in this store's scratch folder")
        key = uuid.uuid4().hex
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(path, target)
        return key, sha256, target.stat().st_size

    def put_file(self, path: Path) -> tuple[str, str, int]:
        with path.open("rb") as fh:
            return self.put(fh)

    def put_bytes(self, data: bytes) -> tuple[str, str, int]:
        return self.put([data])

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    # -- scratch and job workspaces ------------------------------------------------------
    def scratch_dir(self) -> Path:
        """A fresh private folder under data_dir/tmp (same filesystem: renames are atomic)."""
        folder = self.tmp / uuid.uuid4().hex
        folder.mkdir()
        return folder

    def workspace(self, job_id: int) -> Path:
        return self.jobs / str(int(job_id))

    def job_folder(self, job_id: int) -> Path:
        return self.workspace(job_id) / "job"

    def environment_report(self, job_id: int, site: str) -> Path:
        """What a site installed for the job's requirements (JSON, written by the API)."""
        return self.workspace(job_id) / "environments" / f"{site}.json"

    def files_out(self, job_id: int) -> Path:
        return self.workspace(job_id) / "files_out"

    def model_out(self, job_id: int) -> Path:
        return self.workspace(job_id) / "model_out"

    def global_model_path(self, job_id: int, round_num: int | None = None) -> Path:
        """files_out/GLOBAL_MODEL_round_N.pt, or model_out/checkpoint.pt when round is None."""
        if round_num is None:
            return self.model_out(job_id) / "checkpoint.pt"
        return self.files_out(job_id) / f"GLOBAL_MODEL_round_{int(round_num)}.pt"

    def create_workspace(self, job_id: int, job_folder: Path) -> Path:
        """Move a staged job folder into place and create the persistor's output folders."""
        ws = self.workspace(job_id)
        ws.mkdir(parents=True, exist_ok=False)
        os.replace(job_folder, self.job_folder(job_id))
        self.files_out(job_id).mkdir()
        self.model_out(job_id).mkdir()
        return ws

    def remove_workspace(self, job_id: int) -> None:
        shutil.rmtree(self.workspace(job_id), ignore_errors=True)
