"""The one zip extractor: unpack an archive inside its folder only, up to a size limit.

Used by the server for uploads (job zips, shards; `resonfl_server.backend.services.archives` turns these
errors into HTTP 422/413) and by site workers for the bundles they download (trusted, but not
blindly). Stdlib only: refuses `..`, absolute paths, symlinks, clashing entries and archives
that unpack to more than `max_bytes` (counted while writing: zip headers can lie).
"""

from __future__ import annotations

import errno
import lzma
import stat
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO


_SKIP = ("__MACOSX/",)
_CHUNK = 1 << 20
_NAME_MAX = 255  # bytes per path component on common filesystems
# What zipfile raises for archives it cannot read: a broken central directory, an encrypted
# or unsupported entry, corrupt compressed data (zlib, bz2 raises OSError, lzma), a bad CRC.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    RuntimeError,
    ValueError,
    EOFError,
    OverflowError,
    zlib.error,
    lzma.LZMAError,
)
# Entries that clash with each other on disk (a file where a folder is, and the reverse).
_CLASH_ERRNOS = {errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG}


class ArchiveError(ValueError):
    """The archive (``what``) or one of its entries (``name``) is refused, with the reason."""

    def __init__(self, what: str, name: str, message: str) -> None:
        super().__init__(f"{what}: {name}: {message}" if name else f"{what}: {message}")
        self.what, self.name, self.message = what, name, message


class ArchiveTooLarge(ArchiveError):
    """The archive unpacks to more than the limit it was given."""

    def __init__(self, what: str, max_bytes: int) -> None:
        super().__init__(what, "", f"unpacks to more than max_upload_bytes ({max_bytes} bytes)")


def member_path(name: str, what: str) -> PurePosixPath | None:
    """The safe relative path of a zip member, None for entries to skip; raises on `../`,
    absolute paths and other tricks."""
    if name.startswith(_SKIP) or name.endswith("/.DS_Store") or name == ".DS_Store":
        return None
    if "\\" in name or "\x00" in name:
        raise ArchiveError(what, name, "zip entry has a backslash or NUL in its path")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        raise ArchiveError(what, name, "zip entry has an absolute path")
    if ".." in path.parts:
        raise ArchiveError(what, name, "zip entry escapes the folder ('..' in its path)")
    if not path.parts:
        if name.endswith("/"):
            return None  # "./": the folder itself
        raise ArchiveError(what, name, "zip entry has an empty path")
    if any(len(part.encode("utf-8", "surrogateescape")) > _NAME_MAX for part in path.parts):
        raise ArchiveError(what, name, f"zip entry has a name over {_NAME_MAX} bytes")
    return path


def safe_extract(
    source: BinaryIO, dest: Path, what: str, max_bytes: int, strip: str | None = None
) -> list[PurePosixPath]:
    """Extract a zip into `dest`; refuse traversal, absolute paths, symlinks and more than
    `max_bytes` uncompressed (counted while writing: zip headers can lie). `strip` drops a
    leading folder. Returns the relative paths written."""
    archive = _open_zip(source, what)
    written: list[PurePosixPath] = []
    total = 0
    with archive:
        for info in archive.infolist():
            rel = member_path(info.filename, what)
            if rel is None:
                continue
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveError(what, info.filename, "zip entry is a symbolic link")
            if strip is not None:
                if not rel.parts or rel.parts[0] != strip:
                    continue
                rel = PurePosixPath(*rel.parts[1:])
                if not rel.parts:
                    continue
            target = dest.joinpath(*rel.parts)
            try:
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                out = target.open("wb")
            except OSError as exc:
                if exc.errno not in _CLASH_ERRNOS:
                    raise
                raise ArchiveError(
                    what,
                    info.filename,
                    "zip entry clashes with another (a file and a folder "
                    "of the same name, or a path too long)",
                ) from None
            with out:
                for chunk in _read_entry(archive, info, what):
                    total += len(chunk)
                    if total > max_bytes:
                        raise ArchiveTooLarge(what, max_bytes)
                    out.write(chunk)
            written.append(rel)
    return written


def _open_zip(source: BinaryIO, what: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except (*_ZIP_ERRORS, OSError) as exc:
        detail = f": {exc}" if not isinstance(exc, zipfile.BadZipFile) else ""
        raise ArchiveError(what, "", f"not a zip file{detail}") from None


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> Iterator[bytes]:
    """The entry's bytes in chunks; a corrupt, encrypted or unsupported entry is the
    uploader's error. (Only reading is guarded: a failing write is the server's.)"""
    try:
        with archive.open(info) as src:
            while chunk := src.read(_CHUNK):
                yield chunk
    except (*_ZIP_ERRORS, OSError) as exc:
        raise ArchiveError(what, info.filename, f"zip entry cannot be read: {exc}") from None


def zip_names(source: BinaryIO, what: str) -> list[PurePosixPath]:
    """Checked member paths of a zip, without extracting."""
    try:
        with _open_zip(source, what) as archive:
            names = [member_path(i.filename, what) for i in archive.infolist()]
    finally:
        source.seek(0)
    return [n for n in names if n is not None]
