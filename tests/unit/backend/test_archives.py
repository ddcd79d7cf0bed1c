"""Zip uploads are unpacked only inside their folder and only up to the size limit."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from resonfl_server.backend.services.archives import member_path, safe_extract
from resonfl_server.backend.services.errors import InvalidSubmission, PayloadTooLarge


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "C:/x", "a\\..\\x"])
def test_escaping_member_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidSubmission):
        member_path(name, "job_zip")


def test_macos_clutter_is_skipped() -> None:
    assert member_path("__MACOSX/._meta.json", "job_zip") is None


def _zip(entries: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    buffer.seek(0)
    return buffer


def test_a_leading_folder_can_be_stripped(tmp_path: Path) -> None:
    written = safe_extract(
        _zip({"job/meta.json": b"{}", "other/x": b""}), tmp_path, "z", 100, "job"
    )
    assert [p.as_posix() for p in written] == ["meta.json"]
    assert (tmp_path / "meta.json").read_bytes() == b"{}"


def test_the_unpacked_size_is_limited_while_writing(tmp_path: Path) -> None:
    with pytest.raises(PayloadTooLarge):
        safe_extract(_zip({"big": b"\0" * 1000}), tmp_path, "z", 999)
