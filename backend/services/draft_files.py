"""The files of a wizard draft: an uploaded model_def.py, a warm-start checkpoint, per-site
data shards (uploaded zips or generated from a catalog example).

Each function writes into the draft's folder through a staging name and replaces the old file
only when the new one checked out, so a bad upload leaves the previous file in place. Errors
are `InvalidSubmission` / `PayloadTooLarge` with a message for the field at fault; the web
layer puts them beside their inputs.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from resonfl_server.backend.services.archives import safe_extract, tree, write_zip
from resonfl_server.backend.services.errors import InvalidSubmission
from resonfl_server.backend.services.submissions import check_checkpoint
from resonfl.catalog.shards import Split, make_shards
from resonfl.job import Job as JobSpec

MODEL_DEF = "model_def.py"
MAX_MODEL_DEF_BYTES = 4 * 1024 * 1024
_CHUNK = 1 << 20


def save_model_def(folder: Path, source: BinaryIO, filename: str) -> None:
    """Store an uploaded model_def.py (UTF-8 text, at most 4 MiB)."""
    data = source.read(MAX_MODEL_DEF_BYTES + 1)
    try:
        if len(data) > MAX_MODEL_DEF_BYTES:
            raise ValueError("larger than 4 MiB")
        text = data.decode("utf-8")
    except (UnicodeDecodeError, ValueError) as exc:
        message = f"{filename} is not a UTF-8 Python file ({exc})"
        raise InvalidSubmission(MODEL_DEF, "", message) from None
    (folder / MODEL_DEF).write_text(text, encoding="utf-8")


def save_checkpoint(folder: Path, source: BinaryIO, filename: str, previous: str | None) -> str:
    """Store a warm-start checkpoint that loads safely; returns its name in the folder."""
    suffix = ".safetensors" if filename.endswith(".safetensors") else ".pt"
    target = folder / f"checkpoint{suffix}"
    staging = folder / f"upload{suffix}"
    with staging.open("wb") as out:
        shutil.copyfileobj(source, out, _CHUNK)
    try:
        check_checkpoint(staging)
    except InvalidSubmission as exc:
        staging.unlink(missing_ok=True)
        raise InvalidSubmission(filename, "", exc.message) from None
    if previous:
        (folder / previous).unlink(missing_ok=True)
    staging.replace(target)
    return target.name


def remove_checkpoint(folder: Path, name: str) -> None:
    (folder / name).unlink(missing_ok=True)


def extract_shard(shards: Path, site: str, source: BinaryIO, max_bytes: int) -> None:
    """Unzip one site's shard into shards/<site> (a single top folder named after the site is
    stripped); raises InvalidSubmission / PayloadTooLarge and keeps the old shard."""
    target = shards / site
    staging = shards / f".{site}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        written = safe_extract(source, staging, f"shard for {site}", max_bytes)
        tops = {p.parts[0] for p in written}
        inner = staging / site if tops == {site} and (staging / site).is_dir() else staging
        shutil.rmtree(target, ignore_errors=True)
        inner.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def generate_shards(
    shards: Path,
    scratch_parent: Path,
    example: str,
    sites: list[str],
    split: Split,
    alpha: float,
    seed: int,
) -> None:
    """Split a catalog example's data set into shards/<site> for each of `sites` (ValueError
    when the split cannot be made)."""
    work = Path(tempfile.mkdtemp(dir=scratch_parent))
    try:
        made = make_shards(example, work, len(sites), split, alpha, seed, verbose=False)
        shards.mkdir(parents=True, exist_ok=True)
        for site, made_dir in zip(sites, made.values(), strict=True):
            shutil.rmtree(shards / site, ignore_errors=True)
            made_dir.replace(shards / site)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def job_zip(job: JobSpec, scratch_parent: Path, prefix: str = "") -> tuple[Path, Path]:
    """Render `job` into a fresh scratch folder under `scratch_parent` and zip it (entries
    under `prefix`); returns (scratch, zip). The caller removes the scratch folder."""
    scratch = Path(tempfile.mkdtemp(dir=scratch_parent))
    try:
        folder = job.render(scratch / "job")
        return scratch, write_zip(scratch / "job.zip", tree(folder, prefix=prefix))
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
