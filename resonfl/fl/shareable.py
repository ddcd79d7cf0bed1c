"""The shareable generator: how the global model travels between server and sites.

A weights file may also say which of its keys are the model's parameters (the rest are
buffers): the job's persistor writes them as JSON under ``PARAMETERS_META_KEY`` in the
safetensors metadata when it builds the initial model, because only code that builds the model
knows, and the server never runs model code outside the sandbox. FedOpt needs them
(`Aggregator.bind_model`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

StateDict = dict[str, torch.Tensor]
PARAMETERS_META_KEY = "resonfl_parameters"  # also spelled out in templates/custom_persistor.py


class FullModelShareableGenerator:
    """Packages the full state dict as one safetensors file (no pickle, safe to load)."""

    @staticmethod
    def save(weights: StateDict, path: str | Path, parameters: Iterable[str] | None = None) -> str:
        """Write weights atomically as safetensors; return the file's sha256.

        ``parameters``: the model's parameter names, recorded in the file's metadata.
        """
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        meta = None if parameters is None else {PARAMETERS_META_KEY: json.dumps(sorted(parameters))}
        tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
        save_file(tensors, str(tmp), metadata=meta)
        digest = sha256_file(tmp)
        tmp.replace(target)
        return digest

    @staticmethod
    def load(path: str | Path) -> StateDict:
        return load_file(str(path))


def read_parameter_names(path: str | Path) -> list[str] | None:
    """The parameter names a weights file records, or None when it records none."""
    with safe_open(str(path), framework="pt") as fh:
        raw = (fh.metadata() or {}).get(PARAMETERS_META_KEY)
    if raw is None:
        return None
    names = json.loads(raw)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{Path(path).name}: {PARAMETERS_META_KEY} is not a list of names")
    return names


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
