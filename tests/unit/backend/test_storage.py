"""The artifact store writes atomically and hands back the content's sha256."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from resonfl_server.backend.storage import ArtifactStore, ArtifactTooLarge


def test_put_returns_key_hash_and_size(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    key, digest, size = store.put(io.BytesIO(b"weights"))
    assert digest == hashlib.sha256(b"weights").hexdigest() and size == 7
    assert store.open(key).read() == b"weights"
    assert list(store.tmp.iterdir()) == []


def test_an_oversized_put_leaves_nothing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(ArtifactTooLarge):
        store.put([b"x" * 10, b"y" * 10], max_bytes=15)
    assert [p for p in store.artifacts.rglob("*") if p.is_file()] == []
    assert list(store.tmp.iterdir()) == []


def test_keys_cannot_name_paths_outside_the_store(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        ArtifactStore(tmp_path).path("../../etc/passwd")


def test_a_job_workspace_has_the_persistor_folders(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    staged = store.scratch_dir() / "job"
    staged.mkdir()
    (staged / "meta.json").write_text("{}")
    store.create_workspace(7, staged)
    assert (store.job_folder(7) / "meta.json").is_file()
    assert store.files_out(7).is_dir() and store.model_out(7).is_dir()
    assert store.global_model_path(7, 3).name == "GLOBAL_MODEL_round_3.pt"
    assert store.global_model_path(7) == store.model_out(7) / "checkpoint.pt"
