"""How weights travel and are read on the trusted side: one loader, one writer, one hash.

Every platform, simulator and results-script path that reads or writes a weights file goes
through `load_weights` / `save_weights` / `sha256_file`. The loader is the job persistor's
(`custom_persistor.load_state_dict_file`: safetensors, or ``torch.load(weights_only=True)``,
never arbitrary pickle), so the server reads a file exactly as the job's persistor does. The
job's own executor template keeps a copy of its own on purpose: it runs on sites without the
resonfl package installed.

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

from resonfl.templates.custom_persistor import PersistorError, load_state_dict_file

StateDict = dict[str, torch.Tensor]
PARAMETERS_META_KEY = "resonfl_parameters"  # also spelled out in templates/custom_persistor.py
_TORCH_ZIP = b"PK\x03\x04"  # torch.save's zip container


def load_weights(path: str | Path) -> StateDict:
    """Read a state dict safely (safetensors, or a weights-only torch file); PersistorError if not.

    The format is told by the file's first bytes, not its name: artifact-store keys have none.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(9)
    if head[:4] == _TORCH_ZIP or path.suffix in (".pt", ".pth"):
        return load_state_dict_file(path)
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for a bad header
        raise PersistorError(f"{path.name}: not a valid safetensors file ({exc})") from None


def save_weights(
    weights: StateDict, path: str | Path, parameters: Iterable[str] | None = None
) -> str:
    """Write weights atomically as safetensors; return the file's sha256.

    ``parameters``: the model's parameter names, recorded in the file's metadata.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    meta = None if parameters is None else {PARAMETERS_META_KEY: json.dumps(sorted(parameters))}
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    save_file(tensors, str(tmp), metadata=meta)
    digest = sha256_file(tmp)
    tmp.replace(target)
    return digest


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
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FullModelShareableGenerator:
    """The job's shareable generator: the full state dict as one safetensors file (no pickle)."""

    save = staticmethod(save_weights)
    load = staticmethod(load_weights)
