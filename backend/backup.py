"""Backup and restore of a deployment: the job store (every table) and the artifact folder.

One archive (an uncompressed tar: checkpoints do not compress) holds
  manifest.json        format, schema revision, when, row and file counts
  db/<table>.jsonl     every row of every table, one JSON object a line
  data/...             data_dir's artifacts/, jobs/ (workspaces, checkpoints) and web/ (drafts)

The rows are read and written through SQLAlchemy, not pg_dump or the SQLite file, so one
archive restores into either database (a SQLite `resonfl up` moves to PostgreSQL this way).
`restore` refuses a deployment that already holds jobs; into an empty one it builds the schema
at the archive's revision, inserts the rows, then upgrades to this release's head, so an
archive from an older release restores into a newer one.

Consistency: the rows are read in one transaction first, the files after; files are only ever
added, so every file a row names is in the archive. A job running during the backup resumes
from its last persisted round after a restore (the aggregator's reconcile).
"""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext

from resonfl_server.backend.core.db import create_db_engine
from resonfl_server.backend.core.migrate import alembic_config

FORMAT = "resonfl-backup/1"
DATA_FOLDERS = ("artifacts", "jobs", "web")  # what the server owns under data_dir
SKIP_TABLES = {"alembic_version"}


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Manifest:
    format: str
    revision: str
    created_at: float
    rows: dict[str, int]
    files: int
    bytes: int

    def describe(self) -> str:
        rows = ", ".join(f"{t} {n}" for t, n in sorted(self.rows.items()) if n)
        return (
            f"schema {self.revision}; rows: {rows or 'none'}; "
            f"{self.files} files, {self.bytes / 1e6:.1f} MB"
        )


# ------------------------------------------------------------------------------ backup
def backup(database_url: str, data_dir: Path, out: Path) -> Manifest:
    """Write the archive `out` (atomically: a partial archive never has the final name)."""
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            revision = _revision(conn)
            if revision is None:
                raise BackupError("the database has no schema yet: nothing to back up")
            tables = _reflect(conn)
            dumps = {name: _dump_rows(conn, table) for name, table in tables.items()}
    finally:
        engine.dispose()
    files = list(_data_files(Path(data_dir)))
    manifest = Manifest(
        format=FORMAT,
        revision=revision,
        created_at=time.time(),
        rows={name: len(rows) for name, rows in dumps.items()},
        files=len(files),
        bytes=sum(path.stat().st_size for path, _ in files),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    # Owner-only from the first byte: the archive holds password and token hashes.
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    os.chmod(partial, 0o600)
    with tarfile.open(partial, "w") as tar:
        _add_bytes(tar, "manifest.json", json.dumps(manifest.__dict__, indent=2).encode())
        for name, rows in dumps.items():
            _add_bytes(tar, f"db/{name}.jsonl", "".join(r + "\n" for r in rows).encode())
        for path, arcname in files:
            tar.add(path, arcname=f"data/{arcname}", recursive=False)
    os.replace(partial, out)
    return manifest


def _revision(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _reflect(conn: sa.Connection) -> dict[str, sa.Table]:
    meta = sa.MetaData()
    meta.reflect(conn)
    return {t.name: t for t in meta.sorted_tables if t.name not in SKIP_TABLES}


def _dump_rows(conn: sa.Connection, table: sa.Table) -> list[str]:
    order = list(table.primary_key.columns) or list(table.columns)
    result = conn.execute(sa.select(table).order_by(*order)).mappings()
    return [json.dumps({k: _encode(v) for k, v in row.items()}) for row in result]


def _encode(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if hasattr(value, "value") and not isinstance(value, int | float | str):  # an Enum
        return value.value
    return value


def _data_files(data_dir: Path) -> Iterator[tuple[Path, str]]:
    for folder in DATA_FOLDERS:
        top = data_dir / folder
        if not top.is_dir():
            continue
        for path in sorted(top.rglob("*")):
            if path.is_file() and not path.is_symlink():
                yield path, path.relative_to(data_dir).as_posix()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
    tar.addfile(info, io.BytesIO(data))


# ------------------------------------------------------------------------------ restore
def read_manifest(archive: Path) -> Manifest:
    try:
        with tarfile.open(archive, "r") as tar:
            member = tar.extractfile("manifest.json")
            if member is None:
                raise KeyError("manifest.json")
            raw = json.loads(member.read())
    except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
        raise BackupError(f"{archive} is not a ResonFL backup ({exc})") from exc
    if raw.get("format") != FORMAT:
        raise BackupError(f"{archive}: unknown backup format {raw.get('format')!r}")
    return Manifest(**raw)


def restore(archive: Path, database_url: str, data_dir: Path) -> Manifest:
    """Restore `archive` into an empty deployment, then upgrade its schema to head."""
    manifest = read_manifest(archive)
    data_dir = Path(data_dir)
    for folder in DATA_FOLDERS:
        if (data_dir / folder).is_dir() and any((data_dir / folder).iterdir()):
            raise BackupError(
                f"{data_dir / folder} is not empty: restore only into a new data folder"
            )
    engine = create_db_engine(database_url)
    try:
        _refuse_if_holding_jobs(engine)
        cfg = alembic_config(database_url)
        command.upgrade(cfg, manifest.revision)
        with tarfile.open(archive, "r") as tar, engine.begin() as conn:
            tables = _reflect(conn)
            # Rows a first start may have made (the admin, site tokens) give way to the
            # archive's; children before parents, for the foreign keys.
            for table in reversed(list(tables.values())):
                if manifest.rows.get(table.name):
                    conn.execute(table.delete())
            for name, table in tables.items():
                if manifest.rows.get(name):
                    _load_rows(conn, table, tar, name)
            _reset_sequences(conn, tables)
        _extract_data(archive, data_dir)
        command.upgrade(cfg, "head")
    finally:
        engine.dispose()
    return manifest


def _refuse_if_holding_jobs(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("jobs"):
            return
        count = conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one()
    if count:
        raise BackupError(
            f"the target database already holds {count} jobs: restore only into an empty "
            "deployment (a new database and data folder)"
        )


def _load_rows(conn: sa.Connection, table: sa.Table, tar: tarfile.TarFile, name: str) -> None:
    member = tar.extractfile(f"db/{name}.jsonl")
    if member is None:
        raise BackupError(f"the archive lacks db/{name}.jsonl")
    decoders = {c.name: _decoder(c.type) for c in table.columns}
    batch: list[dict[str, Any]] = []
    for line in io.TextIOWrapper(member, encoding="utf-8"):
        row = json.loads(line)
        unknown = set(row) - set(decoders)
        if unknown:
            raise BackupError(f"{name}: columns {sorted(unknown)} are not in the schema")
        batch.append({k: decoders[k](v) for k, v in row.items()})
        if len(batch) >= 500:
            conn.execute(table.insert(), batch)
            batch = []
    if batch:
        conn.execute(table.insert(), batch)


def _decoder(kind: sa.types.TypeEngine[Any]) -> Any:
    def keep(v: Any) -> Any:
        return v

    if isinstance(kind, sa.DateTime):
        return lambda v: None if v is None else datetime.fromisoformat(v)
    if isinstance(kind, sa.Date):
        return lambda v: None if v is None else date.fromisoformat(v)
    if isinstance(kind, sa.LargeBinary):
        return lambda v: None if v is None else base64.b64decode(v)
    return keep


def _reset_sequences(conn: sa.Connection, tables: dict[str, sa.Table]) -> None:
    """PostgreSQL: ids were inserted explicitly, so move each serial past the largest."""
    if conn.dialect.name != "postgresql":
        return
    for name, table in tables.items():
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not isinstance(pk[0].type, sa.Integer):
            continue
        col = pk[0].name
        seq = conn.execute(
            sa.text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": name, "c": col}
        ).scalar()
        if seq:
            conn.execute(
                sa.text(
                    f'SELECT setval(:s, COALESCE((SELECT max("{col}") FROM "{name}"), 0) + 1, false)'
                ),
                {"s": seq},
            )


def _extract_data(archive: Path, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r") as tar:
        # Hard links stay hard links (the persistor links each round's file to the rolling
        # GLOBAL_MODEL.pt): their targets are renamed like the files they point to.
        members = [
            m for m in tar.getmembers() if m.name.startswith("data/") and (m.isfile() or m.islnk())
        ]
        for member in members:
            member.name = member.name[len("data/") :]
            if member.islnk():
                member.linkname = member.linkname.removeprefix("data/")
            if member.name.split("/", 1)[0] not in DATA_FOLDERS:
                raise BackupError(f"the archive holds an unexpected path: data/{member.name}")
        tar.extractall(data_dir, members=members, filter="data")
