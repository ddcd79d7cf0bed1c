"""The shareable generator: how the global model travels between server and sites."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

StateDict = dict[str, torch.Tensor]


class FullModelShareableGenerator:
    """Packages the full state dict as one safetensors file (no pickle, safe to load)."""

    @staticmethod
    def save(weights: StateDict, path: str | Path) -> str:
        """Write weights atomically as safetensors; return the file's sha256."""
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp))
        digest = sha256_file(tmp)
        tmp.replace(target)
        return digest

    @staticmethod
    def load(path: str | Path) -> StateDict:
        return load_file(str(path))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
