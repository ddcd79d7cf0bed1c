"""ResonFL global-model persistor (server side). Byte-identical in every job; do not edit.

The only component that touches the global model files of a job's workspace:
  * initial weights: from the job's warm-start checkpoint (safetensors, or a torch file read
    with ``torch.load(weights_only=True)``) or a freshly built model class from model_def.py;
  * after each aggregation: ``files_out/GLOBAL_MODEL.pt`` (rolling) and
    ``files_out/GLOBAL_MODEL_round_N.pt``;
  * at the end: ``model_out/checkpoint.pt``, the file the Download button serves.
Every write is atomic (temp file in the same folder, fsync, rename): no reader ever sees a
half-written file. Self-contained: stdlib, torch and safetensors only.

Building the initial model runs user code (model_def.py), so the platform runs that step in
its sandbox: ``python custom_persistor.py init --job-dir DIR --out initial.safetensors``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

StateDict = dict[str, torch.Tensor]
GLOBAL_MODEL = "GLOBAL_MODEL.pt"
ROUND_MODEL = "GLOBAL_MODEL_round_{}.pt"
ROUND_MODEL_RE = re.compile(r"^GLOBAL_MODEL_round_(\d+)\.pt$")
FINAL_MODEL = "checkpoint.pt"
PARAMETERS_META_KEY = "resonfl_parameters"


class PersistorError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write ``obj`` with torch.save so that ``path`` is either old or complete, never partial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_link(source: Path, path: Path) -> None:
    """Make ``path`` name the same file as ``source`` (atomically replacing it): the rolling
    GLOBAL_MODEL.pt costs a directory entry, not a second write of the model. Where hard
    links are not allowed, a copy."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.link")
    try:
        os.link(source, tmp)
    except OSError:
        import shutil  # lazy: fallback only

        shutil.copyfile(source, tmp)
    os.replace(tmp, path)


def load_state_dict_file(path: Path) -> StateDict:
    """Read weights safely: safetensors, or torch.load with weights_only=True (no pickle code)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # lazy: this path only

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises several types for a bad header
            raise PersistorError(f"{path.name}: not a valid safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PersistorError(
            f"{path.name}: not a weights-only torch checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner:
                obj = inner
                break
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise PersistorError(f"{path.name}: expected a state dict of tensors")
    return dict(obj)


class PTFileModelPersistor:
    """Loads the initial global model and saves each round's global model atomically."""

    def __init__(
        self,
        workspace: str | Path,
        job_dir: str | Path | None = None,
        model: str = "model",
        model_checkpoint: str | None = None,
    ) -> None:
        self.workspace = Path(workspace)
        self.job_dir = Path(job_dir) if job_dir is not None else None
        self.model_id = model
        self.model_checkpoint = model_checkpoint
        self.files_out = self.workspace / "files_out"
        self.model_out = self.workspace / "model_out"

    # -- initial weights (runs model_def.py: call it inside the sandbox) -------------------
    def build_model(self) -> torch.nn.Module:
        if self.job_dir is None:
            raise PersistorError("job_dir is needed to build the model")
        config = json.loads((self.job_dir / "config_fed_server.json").read_text("utf-8"))
        comp = next(c for c in config["components"] if c.get("id") == self.model_id)
        module_name, _, class_name = comp["path"].rpartition(".")
        if str(self.job_dir) not in sys.path:
            sys.path.insert(0, str(self.job_dir))
        module = importlib.import_module(module_name)
        return getattr(module, class_name)(**comp.get("args", {}))

    def load_initial(self) -> StateDict:
        return self.load_initial_with_parameters()[0]

    def load_initial_with_parameters(self) -> tuple[StateDict, list[str]]:
        """Initial weights and the model's parameter names (every other key is a buffer)."""
        model = self.build_model()
        if self.model_checkpoint:
            assert self.job_dir is not None
            weights = load_state_dict_file(self.job_dir / self.model_checkpoint)
            try:
                model.load_state_dict(weights, strict=True)
            except RuntimeError as exc:
                raise PersistorError(
                    f"{self.model_checkpoint} does not fit the model class: {exc}"
                ) from None
        weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        # remove_duplicate=False: a tied weight is in state_dict() under every name
        names = sorted(n for n, _ in model.named_parameters(remove_duplicate=False))
        return weights, names

    # -- per-round and final saves ---------------------------------------------------------
    def save_round(self, weights: StateDict, round_num: int) -> Path:
        """Write GLOBAL_MODEL_round_N.pt, then the rolling GLOBAL_MODEL.pt."""
        target = self.files_out / ROUND_MODEL.format(round_num)
        atomic_torch_save(weights, target)
        atomic_link(target, self.files_out / GLOBAL_MODEL)
        return target

    def save_final(self, weights: StateDict) -> Path:
        target = self.model_out / FINAL_MODEL
        atomic_torch_save(weights, target)
        return target

    def rounds_saved(self) -> list[int]:
        if not self.files_out.is_dir():
            return []
        found = (ROUND_MODEL_RE.match(p.name) for p in self.files_out.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def load_round(self, round_num: int) -> StateDict:
        return load_state_dict_file(self.files_out / ROUND_MODEL.format(round_num))


def _training_seed(job_dir: Path) -> int:
    """The job's TrainingConfig seed, so the same job starts from the same weights."""
    try:
        client = json.loads((job_dir / "config_fed_client.json").read_text("utf-8"))
        return int(client["executors"][0]["executor"]["args"].get("seed", 0))
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return 0


def _init_command(job_dir: Path, out: Path) -> None:
    began = time.perf_counter()
    torch.manual_seed(_training_seed(job_dir))
    config = json.loads((job_dir / "config_fed_server.json").read_text("utf-8"))
    comp = next(c for c in config["components"] if c.get("id") == "persistor")
    args = comp.get("args", {})
    persistor = PTFileModelPersistor(
        workspace=out.parent,
        job_dir=job_dir,
        model=args.get("model", "model"),
        model_checkpoint=args.get("model_checkpoint"),
    )
    weights, parameters = persistor.load_initial_with_parameters()
    built = time.perf_counter()
    from safetensors.torch import save_file  # lazy: this path only

    tmp = out.with_name(out.name + ".tmp")
    # Which keys are parameters (the rest are buffers): the server's FedOpt needs it and may
    # not build the model itself. Same key as resonfl.fl.shareable.PARAMETERS_META_KEY.
    meta = {PARAMETERS_META_KEY: json.dumps(parameters)}
    save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp), metadata=meta)
    os.replace(tmp, out)
    # where the step's time went (the server shows it as round 0's "initial weights")
    phases = {"build_s": built - began, "save_s": time.perf_counter() - built}
    out.with_name(out.name + ".phases.json").write_text(json.dumps(phases))
    print(f"initial weights: {len(weights)} tensors -> {out.name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="write the initial global weights as safetensors")
    init.add_argument("--job-dir", type=Path, required=True)
    init.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        _init_command(args.job_dir.resolve(), args.out.resolve())
    except PersistorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
