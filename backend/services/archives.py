"""Zip files in and out: uploads unpacked safely (the one extractor, `resonfl.archives`, with
its refusals turned into 422/413), bundles for sites."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from resonfl import archives
from resonfl.archives import ArchiveError, ArchiveTooLarge

from resonfl_server.backend.services.errors import InvalidSubmission, PayloadTooLarge


@contextmanager
def _as_submission_errors() -> Iterator[None]:
    try:
        yield
    except ArchiveTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from None
    except ArchiveError as exc:
        raise InvalidSubmission(exc.what, exc.name, exc.message) from None


def member_path(name: str, what: str) -> PurePosixPath | None:
    """`resonfl.archives.member_path`, refusals as InvalidSubmission."""
    with _as_submission_errors():
        return archives.member_path(name, what)


def safe_extract(
    source: BinaryIO, dest: Path, what: str, max_bytes: int, strip: str | None = None
) -> list[PurePosixPath]:
    """`resonfl.archives.safe_extract`, refusals as InvalidSubmission / PayloadTooLarge."""
    with _as_submission_errors():
        return archives.safe_extract(source, dest, what, max_bytes, strip)


def zip_names(source: BinaryIO, what: str) -> list[PurePosixPath]:
    """`resonfl.archives.zip_names`, refusals as InvalidSubmission."""
    with _as_submission_errors():
        return archives.zip_names(source, what)


def write_zip(target: Path, entries: Iterable[tuple[Path, str]]) -> Path:
    """Zip (file on disk, name in archive) pairs; stored uncompressed (weights and shards
    rarely compress, and speed matters more)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as out:
        for path, arcname in entries:
            out.write(path, arcname)
    return target


def tree(folder: Path, prefix: str = "") -> list[tuple[Path, str]]:
    """Every regular file under `folder` as (path, archive name), symlinks left out."""
    return [
        (p, prefix + p.relative_to(folder).as_posix())
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    ]
