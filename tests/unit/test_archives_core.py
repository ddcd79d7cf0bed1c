"""The one zip extractor (`resonfl.archives`), as the site worker uses it on a bundle."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from resonfl.archives import ArchiveError, ArchiveTooLarge, safe_extract


def _zip(entries: dict[str, bytes], symlink: str | None = None) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    buffer.seek(0)
    return buffer


def test_a_bundle_unpacks_inside_its_folder(tmp_path: Path) -> None:
    written = safe_extract(_zip({"job/meta.json": b"{}"}), tmp_path, "bundle", 1 << 20)
    assert [p.as_posix() for p in written] == ["job/meta.json"]
    assert (tmp_path / "job" / "meta.json").read_bytes() == b"{}"


@pytest.mark.parametrize("entries,symlink", [({"../x": b""}, None), ({}, "link")])
def test_escaping_entries_and_symlinks_are_refused(
    tmp_path: Path, entries: dict[str, bytes], symlink: str | None
) -> None:
    with pytest.raises(ArchiveError) as info:
        safe_extract(_zip(entries, symlink), tmp_path / "out", "bundle", 1 << 20)
    assert info.value.what == "bundle" and not (tmp_path / "x").exists()


def test_the_limit_is_counted_while_writing(tmp_path: Path) -> None:
    with pytest.raises(ArchiveTooLarge):
        safe_extract(_zip({"big": b"\0" * 100}), tmp_path, "bundle", 99)
