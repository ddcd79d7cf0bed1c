"""`resonfl backup` / `restore` refuse what they cannot do with a message, exit 2, and leave
nothing behind (the round trip itself: tests/integration/platform/test_day_two.py)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from resonfl_server.backend.core.migrate import upgrade_head

RESONFL = str(Path(sys.executable).with_name("resonfl"))


def cli(tmp_path: Path, *args: str, db: str = "store.db") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RESONFL_DATABASE_URL": f"sqlite:///{tmp_path / db}",
        "RESONFL_DATA_DIR": str(tmp_path / "data"),
    }
    return subprocess.run(
        [RESONFL, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )


def test_backup_of_a_database_without_schema_is_refused(tmp_path: Path) -> None:
    done = cli(tmp_path, "backup", str(tmp_path / "b.tar"))
    assert done.returncode == 2 and "no schema yet" in done.stderr
    assert not list(tmp_path.glob("b.tar*"))


def test_restore_of_a_file_that_is_not_a_backup_names_it_and_changes_nothing(
    tmp_path: Path,
) -> None:
    bogus = tmp_path / "notes.tar"
    bogus.write_text("not a tar")
    done = cli(tmp_path, "restore", str(bogus))
    assert done.returncode == 2 and f"{bogus} is not a ResonFL backup" in done.stderr
    assert not (tmp_path / "store.db").exists() and not (tmp_path / "data").exists()


def test_a_backup_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    upgrade_head(f"sqlite:///{tmp_path / 'store.db'}")
    done = cli(tmp_path, "backup", str(tmp_path / "b.tar"))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "b.tar").stat().st_mode) == 0o600
    assert "schema" in done.stdout
