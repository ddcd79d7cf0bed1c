"""ResonFL's per-round client executor: one site, one round, in a fresh child process.

Copied byte-identically into every job folder. Self-contained on purpose (stdlib, torch,
numpy, safetensors only): a site worker runs it without the resonfl package installed.

    python custom_client_executor.py --task task.json
    python custom_client_executor.py --serve [--ctl-fd 1]

The task JSON names the job folder, the site, the round, the global weights to load
(``weights_in``) and where to write the update (``weights_out``) and the result
(``result_out``: ``{"samples", "metrics", "train_s", "eval_s"}`` or ``{"error"}``).
A task with ``"mode": "evaluate"`` (``resonfl evaluate``) only runs the eval function on
``data_root`` and writes ``{"metrics", "eval_s"}``.
The train function in model_def.py receives an `FLEnv`: the round's settings plus a helper
kit (optimizer, continuous LR schedule, the whole standard loop in `FLEnv.fit`).

``--serve`` keeps one process for many rounds of the SAME job on the SAME site (the runner
never hands it another job): it reads one request per line on stdin,
``{"task": path, "log": path, "cwd": dir, "env": {...}}``, runs the task exactly as ``--task``
would (stdout/stderr into that round's log, environment reset to the process's own plus
``env``, RNGs reset, model_def imported afresh, the job folder's modules dropped afterwards),
then writes ``{"done": round, "rc": code}`` as one line to the control fd (``--ctl-fd``,
default 1, duplicated before any round's log takes fd 1). EOF on stdin ends it.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import math
import os
import random
import sys
import time
import traceback
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

CLIENT_CONFIG = "config_fed_client.json"
OPTIMIZER_STATE = "optimizer_state.pt"
EMA_STATE = "ema_state.pt"
DP_STATE = "dp_accountant.json"
# The RDP orders of resonfl.fl.accountant.ORDERS (a unit test keeps the two equal): opacus's
# default orders, then higher ones for low noise.
DP_ORDERS = (
    *(1 + x / 10.0 for x in range(1, 100)),
    *map(float, range(12, 64)),
    80.0, 100.0, 128.0, 192.0, 256.0, 512.0, 1024.0,
)  # fmt: skip
TASK_KEYS = (
    "job_dir",
    "site",
    "round",
    "num_rounds",
    "weights_in",
    "weights_out",
    "result_out",
    "out_dir",
    "data_root",
    "state_dir",
)
StateDict = dict[str, torch.Tensor]


# ------------------------------------------------------------------ small pure helpers
def derive_seed(seed: int, current_round: int, site: str) -> int:
    """A stable 31-bit seed per (seed, round, site): sites and rounds shuffle differently."""
    return zlib.crc32(f"{seed}:{current_round}:{site}".encode()) & 0x7FFFFFFF


def lr_factor(
    position: int, total: int, warmup: int, schedule: str, min_lr_ratio: float = 0.0
) -> float:
    """Multiplier of the base LR at `position` of a `total`-step warmup + decay schedule."""
    if warmup > 0 and position < warmup:
        return (position + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, max(0.0, (position - warmup) / span))
    if schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        decay = 1.0 - progress
    else:
        raise ValueError(f"unknown lr_schedule {schedule!r}")
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def cpu_state_dict(model: nn.Module) -> StateDict:
    """Detached, contiguous CPU tensors, ready for safetensors. A tensor already on the CPU
    and contiguous is used as it is (no second copy of the model); only one that shares its
    storage with an earlier one (tied weights: safetensors refuses shared tensors) is cloned."""
    out: StateDict = {}
    seen: set[int] = set()
    for key, value in model.state_dict().items():
        tensor = value.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen and tensor.numel():
            tensor = tensor.clone()
        seen.add(storage)
        out[key] = tensor
    return out


def model_with_weights(
    cls: Callable[..., nn.Module], kwargs: dict[str, Any], state: StateDict
) -> nn.Module:
    """The model, holding ``state``. Built on the meta device, it takes the loaded tensors as
    its own (``assign``): safetensors maps the file privately, so the weights are neither
    initialised at random nor copied a second time (a ResNet-50 round: 13 ms instead of
    140 ms). A model whose __init__ needs real values (non-persistent buffers, tensors kept
    as plain attributes, .item()), ties weights, or whose dtypes differ from the file's is
    built normally and the weights are copied in."""
    try:
        with torch.device("meta"):
            model = cls(**kwargs)
    except Exception:  # noqa: BLE001 - this model needs real tensors to build
        model = None
    if model is None or any(_needs_values(m) for m in model.modules()):
        model = cls(**kwargs)
    elif _can_assign(model, state):
        model.load_state_dict(state, strict=True, assign=True)
        return model
    else:
        model = model.to_empty(device="cpu")
    model.load_state_dict(state, strict=True)
    return model


def _can_assign(model: nn.Module, state: StateDict) -> bool:
    """Every entry matches one of the model's own, untied tensors in shape and dtype."""
    own = model.state_dict(keep_vars=True)
    if set(own) != set(state) or len({id(t) for t in own.values()}) != len(own):
        return False
    return all(
        own[k].shape == v.shape and own[k].dtype == v.dtype and v.device.type == "cpu"
        for k, v in state.items()
    )


def _needs_values(module: nn.Module) -> bool:
    if getattr(module, "_non_persistent_buffers_set", None):
        return True
    return any(isinstance(v, torch.Tensor) for v in vars(module).values())


def _atomic_write_bytes(path: Path, write: Callable[[Path], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=True)
    _atomic_write_bytes(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_weights(state: StateDict, path: str | Path) -> None:
    _atomic_write_bytes(Path(path), lambda tmp: save_file(state, str(tmp)))


def load_weights(path: str | Path) -> StateDict:
    """Safetensors, or a .pt/.pth state dict loaded with weights_only (never arbitrary pickle)."""
    p = Path(path)
    if p.suffix in (".pt", ".pth"):
        data = torch.load(p, map_location="cpu", weights_only=True)
        if isinstance(data, dict) and isinstance(data.get("model"), dict):
            data = data["model"]
        return dict(data)
    return load_file(str(p))


def _short_multiprocessing_tempdir() -> None:
    """DataLoader workers hand each batch's shared memory over a Unix socket in
    multiprocessing's temp dir; a socket path over 107 bytes cannot be bound, and the round's
    TMPDIR (inside its work folder) can be longer. Root that dir in /tmp (the sandbox's own
    tmpfs) once per process instead; multiprocessing caches it and removes it at exit."""
    import multiprocessing.util  # lazy: only jobs with loader_workers
    import tempfile  # lazy: same

    if len(tempfile.gettempdir()) < 64 or not os.access("/tmp", os.W_OK):
        return
    saved = tempfile.tempdir
    tempfile.tempdir = "/tmp"
    try:
        multiprocessing.util.get_temp_dir()
    finally:
        tempfile.tempdir = saved


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor | np.generic):
        return value.item()
    return value


def make_logger(site: str = "site", current_round: int = 0) -> logging.Logger:
    """A logger writing to stdout: the runner captures it as the site's log."""
    logger = logging.getLogger("resonfl.executor")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stdout)
    fmt = f"%(asctime)s %(levelname)s [{site} r{current_round}] %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


# ------------------------------------------------------------------ DP-SGD
class PrivacyBudgetExhausted(RuntimeError):
    """Training this round would take the site past the job's target epsilon: not trained."""


class DPModelError(ValueError):
    """The model has layers DP-SGD cannot train (BatchNorm mixes the samples of a batch)."""


def dp_epsilon(history: Iterable[Iterable[float]], delta: float) -> float:
    """Epsilon after ``(noise_multiplier, sample_rate, steps)`` steps (opacus's RDP analysis,
    `DP_ORDERS`); what resonfl.fl.accountant.epsilon computes on the server."""
    import warnings  # lazy: DP-SGD only

    from opacus.accountants.analysis.rdp import (  # lazy: only DP-SGD jobs need opacus
        compute_rdp,
        get_privacy_spent,
    )

    # RDP adds up over steps, so rounds with the same (sigma, q) are one call: compute_rdp
    # costs ~0.1 s at q = 0.5, and a site's history grows by one entry a round
    merged: dict[tuple[float, float], int] = {}
    for sigma, q, steps in history:
        if steps <= 0:
            continue
        if sigma <= 0:
            return math.inf
        merged[(float(sigma), float(q))] = merged.get((float(sigma), float(q)), 0) + int(steps)
    total = None
    for (sigma, q), steps in merged.items():
        rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=list(DP_ORDERS))
        total = rdp if total is None else total + rdp
    if total is None:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the largest alpha": still valid
        eps, _ = get_privacy_spent(orders=list(DP_ORDERS), rdp=total, delta=delta)
    return float(eps)


def dp_noise_for_target(target: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier whose ``steps`` at ``sample_rate`` stay within ``target``."""
    lo, hi = 0.0, 10.0
    while dp_epsilon([(hi, sample_rate, steps)], delta) > target:
        hi *= 2
        if hi > 1e6:
            raise ValueError(f"no noise multiplier reaches epsilon {target}")
    while hi - lo > 1e-4 * max(hi, 1e-3):
        mid = (lo + hi) / 2
        if dp_epsilon([(mid, sample_rate, steps)], delta) > target:
            lo = mid
        else:
            hi = mid
    return hi


def dp_model_problems(model: nn.Module) -> list[str]:
    """Each layer DP-SGD cannot train, named by its path in the model, with the fix."""
    from opacus.validators import ModuleValidator  # lazy: only DP-SGD jobs need opacus

    problems = []
    for name, module in model.named_modules():
        where = f"{name or '(the model itself)'} ({type(module).__name__})"
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            problems.append(
                f"{where}: BatchNorm normalizes each sample with its batch's statistics, so one "
                "sample's gradient depends on the others and cannot be clipped alone. Replace it "
                "with GroupNorm (nn.GroupNorm(groups, channels)) or LayerNorm in model_def.py"
            )
            continue
        validator = ModuleValidator.VALIDATORS.get(type(module))
        if validator is not None:
            for err in validator(module):
                problems.append(f"{where}: {str(err).splitlines()[0]}")
    return problems


def check_dp_model(model: nn.Module) -> None:
    problems = dp_model_problems(model)
    if problems:
        raise DPModelError("DP-SGD cannot train this model: " + "; ".join(problems))


# ------------------------------------------------------------------ EMA
class EMA:
    """Exponential moving average of a model's state; integer buffers are copied, not averaged.

    FL-correct: the average starts from the weights this round received (the global model), never
    from what this site averaged in an earlier round: under cyclic or partial participation the
    site's old average is stale, and under FedAvg with full participation re-anchoring gives the
    same aggregate anyway (the average is linear). What persists across rounds is only the decay
    schedule: ``updates`` counts EMA steps over the run and the decay warms up as
    ``min(decay, (1 + updates) / (10 + updates))`` (TensorFlow's ``num_updates`` rule), so an
    early round follows training closely and a late one averages with the full decay.
    """

    def __init__(self, state: StateDict, decay: float, updates: int = 0) -> None:
        self.decay = decay
        self.updates = updates
        self.shadow = {k: v.detach().clone() for k, v in state.items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        for key, value in model.state_dict().items():
            shadow = self.shadow[key]
            if shadow.is_floating_point():
                shadow.mul_(decay).add_(value.detach().to(shadow.dtype), alpha=1 - decay)
            else:
                shadow.copy_(value)
        self.updates += 1


# ------------------------------------------------------------------ the kit
class FLEnv:
    """What a train function sees: the round's settings and the standard training loop.

    `args` is the job's TrainingConfig (executor.args), `extra` its extra dict, `task_args`
    what the workflow adds for this round (e.g. ``{"fedprox_mu": 0.01}``).
    """

    def __init__(
        self,
        task: dict[str, Any],
        args: dict[str, Any],
        logger: logging.Logger | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.task = task
        self.args = dict(args)
        self.extra = dict(self.args.get("extra") or {})
        self.task_args = dict(task.get("task_args") or {})
        # Which run STATE_DIR's files must belong to (a job id, a simulator run): a state file
        # saved by another run is ignored, never resumed.
        self.run_id: str | None = self.task_args.get("run_id") or None
        self.current_round = int(task["round"])
        self.num_rounds = int(task["num_rounds"])
        self.site_name = str(task["site"])
        self.data_root = Path(task["data_root"])
        self.state_dir = Path(task["state_dir"])
        self.out_dir = Path(task["out_dir"])
        self.logger = logger or make_logger(self.site_name, self.current_round)
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.global_state: StateDict | None = None  # round-start weights, set by the executor
        self.data_s = 0.0  # seconds spent loading data through load_npz (reported per round)
        self.proximal_used = False  # set by proximal_term; a FedProx round without it warns
        self.dp_used = False  # set by fit's private path; a DP-SGD round without it is refused
        self._dp_calibration: dict[str, float] | None = None  # noise calibrated this round
        self._prox_anchor: dict[str, torch.Tensor] = {}

    # -- settings --------------------------------------------------------------
    def arg(self, name: str, default: Any = None) -> Any:
        value = self.args.get(name, default)
        return default if value is None else value

    @property
    def seed(self) -> int:
        return derive_seed(int(self.arg("seed", 0)), self.current_round, self.site_name)

    @property
    def amp_enabled(self) -> bool:
        return bool(self.arg("amp", False)) and self.device.type == "cuda"

    def seed_everything(self) -> int:
        """Seed random, numpy and torch from seed + round + site; return the derived seed."""
        seed = self.seed
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        return seed

    def steps_per_round(self, batches_per_epoch: int) -> int:
        """local_steps, or local_epochs x batches per epoch (at least one step)."""
        if self.args.get("local_steps"):
            return int(self.args["local_steps"])
        epochs = float(self.arg("local_epochs", 1.0))
        return max(1, math.ceil(epochs * batches_per_epoch))

    def load_npz(self, name: str, root: str | Path | None = None) -> TensorDataset:
        """DATA_ROOT/<name>.npz with X (float32) and y (int64) as a TensorDataset."""
        path = Path(root or self.data_root) / (name if name.endswith(".npz") else f"{name}.npz")
        if not path.is_file():
            raise FileNotFoundError(f"data file {path} not found")
        started = time.perf_counter()
        with np.load(path) as data:
            x = torch.from_numpy(np.asarray(data["X"], dtype=np.float32))
            y = torch.from_numpy(np.asarray(data["y"], dtype=np.int64))
        self.data_s += time.perf_counter() - started  # the round's "data load" phase
        return TensorDataset(x, y)

    def data_loader(
        self,
        dataset: Dataset,
        batch_size: int | None = None,
        shuffle: bool = True,
        collate: Callable[..., Any] | None = None,
    ) -> DataLoader:
        """A DataLoader whose shuffling is fixed by seed + round + site."""
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        return DataLoader(
            dataset,
            batch_size=int(batch_size or self.arg("batch_size", 32)),
            shuffle=shuffle,
            generator=generator,
            collate_fn=collate,
            num_workers=self.loader_workers,
            pin_memory=self.device.type == "cuda",
        )

    @property
    def loader_workers(self) -> int:
        """DataLoader worker processes (forked from this job process, inside its sandbox)."""
        workers = int(self.arg("loader_workers", 0))
        if workers > 0:
            _short_multiprocessing_tempdir()
        return workers

    # -- optimizer and schedule -------------------------------------------------
    @property
    def optimizer_state_path(self) -> Path:
        return self.state_dir / OPTIMIZER_STATE

    def make_optimizer(
        self, model: nn.Module, params: Iterable[torch.nn.Parameter] | None = None
    ) -> torch.optim.Optimizer:
        """adamw / adam / sgd per args; restores STATE_DIR/optimizer_state.pt when persisted."""
        name = str(self.arg("optimizer", "adamw"))
        trainable = (
            list(params)
            if params is not None
            else [p for p in model.parameters() if p.requires_grad]
        )
        optimizer = self._build_optimizer(name, trainable)
        if self.arg("persist_optimizer_state", True):
            self._restore_optimizer(name, optimizer)
        return optimizer

    def _hyper(self, name: str) -> dict[str, Any]:
        lr = float(self.arg("lr", 1e-3))
        wd = float(self.arg("weight_decay", 0.0))
        if name == "sgd":
            return {"lr": lr, "weight_decay": wd, "momentum": float(self.arg("momentum", 0.9))}
        betas = tuple(float(b) for b in self.arg("betas", (0.9, 0.999)))
        return {"lr": lr, "weight_decay": wd, "betas": betas}

    def _build_optimizer(
        self, name: str, params: list[torch.nn.Parameter]
    ) -> torch.optim.Optimizer:
        classes = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
        if name not in classes:
            raise ValueError(f"unknown optimizer {name!r} (adamw, adam or sgd)")
        return classes[name](params, **self._hyper(name))

    def load_state_file(self, path: Path) -> dict[str, Any] | None:
        """A state file of this run from STATE_DIR, or None (absent, unreadable, another run's)."""
        if not path.is_file():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: start fresh, say so
            self.logger.warning("%s is unreadable (%s); starting fresh", path.name, exc)
            return None
        if not isinstance(saved, dict):
            self.logger.warning("%s is not a state dict; starting fresh", path.name)
            return None
        if self.run_id is not None and saved.get("run_id") != self.run_id:
            self.logger.warning(
                "%s belongs to run %s, not this run %s; starting fresh",
                path.name,
                saved.get("run_id"),
                self.run_id,
            )
            return None
        return saved

    def _restore_optimizer(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        path = self.optimizer_state_path
        saved = self.load_state_file(path)
        if saved is None:
            return
        if saved.get("optimizer") != name:
            self.logger.warning(
                "optimizer state in %s is for %s; starting fresh", path, saved.get("optimizer")
            )
            return
        try:
            optimizer.load_state_dict(saved["state"])
        except (ValueError, KeyError, RuntimeError) as exc:
            self.logger.warning(
                "optimizer state in %s does not fit (%s); starting fresh", path, exc
            )
            return
        for group in optimizer.param_groups:  # the job's config, not the file, sets hyperparameters
            group.update(self._hyper(name))
        self.logger.info("restored optimizer state from round %s", saved.get("round"))

    def save_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Write STATE_DIR/optimizer_state.pt (atomically) for the next round to restore."""
        state = {
            "run_id": self.run_id,
            "optimizer": str(self.arg("optimizer", "adamw")),
            "round": self.current_round,
            "state": optimizer.state_dict(),
        }
        _atomic_write_bytes(self.optimizer_state_path, lambda tmp: torch.save(state, tmp))

    def schedule(self, steps_per_round: int) -> tuple[int, int, int]:
        """(offset, total, warmup) in steps of this round's LR schedule.

        Continuous: the position runs over every round (round x steps_per_round + step).
        Otherwise each round replays the whole schedule, warmup share included, in its own steps.
        """
        warmup = int(self.arg("warmup_steps", 0))
        if self.arg("continuous_schedule", True):
            return self.current_round * steps_per_round, self.num_rounds * steps_per_round, warmup
        total_global = max(1, self.num_rounds * steps_per_round)
        return 0, steps_per_round, round(warmup * steps_per_round / total_global)

    def lr_at(self, local_step: int, steps_per_round: int) -> float:
        """The LR this round's `local_step` uses (what `make_scheduler` applies)."""
        offset, total, warmup = self.schedule(steps_per_round)
        factor = lr_factor(
            offset + local_step,
            total,
            warmup,
            str(self.arg("lr_schedule", "cosine")),
            float(self.arg("min_lr_ratio", 0.0)),
        )
        return float(self.arg("lr", 1e-3)) * factor

    def make_scheduler(
        self, optimizer: torch.optim.Optimizer, steps_per_round: int
    ) -> torch.optim.lr_scheduler.LambdaLR:
        """Warmup + cosine/linear/constant; step it once after every optimizer step."""
        base = float(self.arg("lr", 1e-3))
        for group in optimizer.param_groups:
            group["lr"] = base
            group["initial_lr"] = base
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: self.lr_at(step, steps_per_round) / base
        )

    # -- EMA -------------------------------------------------------------------
    @property
    def ema_state_path(self) -> Path:
        return self.state_dir / EMA_STATE

    def start_ema(self, model: nn.Module) -> EMA | None:
        """EMA anchored on the round-start weights (the received global); None when off.

        With ema_persist the decay schedule (the run's EMA step count) continues from
        STATE_DIR; the averaged weights never do (see `EMA`).
        """
        decay = self.args.get("ema_decay")
        if not decay:
            return None
        updates = 0
        saved = self.load_state_file(self.ema_state_path) if self.arg("ema_persist", True) else None
        if saved is not None:
            updates = int(saved.get("updates", 0))
            self.logger.info(
                "EMA from the received global model; decay schedule at step %d", updates
            )
        return EMA(model.state_dict(), float(decay), updates)

    def finish_ema(self, model: nn.Module, ema: EMA) -> None:
        """Load the EMA weights into the model (they are what is submitted); persist the schedule."""
        model.load_state_dict(ema.shadow)
        if self.arg("ema_persist", True):
            state = {"run_id": self.run_id, "round": self.current_round, "updates": ema.updates}
            _atomic_write_bytes(self.ema_state_path, lambda tmp: torch.save(state, tmp))

    # -- FedProx ------------------------------------------------------------------
    @property
    def fedprox_mu(self) -> float:
        """FedProx's mu for this round (0.0 when the job's aggregator is not FedProx)."""
        return float(self.task_args.get("fedprox_mu") or 0.0)

    def proximal_term(self, model: nn.Module) -> torch.Tensor:
        """FedProx's ``mu/2 * ||w - w_global||^2`` over the trainable parameters, for a custom loop.

        One call per step, added to the loss: ``loss = criterion(model(x), y) +
        env.proximal_term(model)``. A zero tensor when the job is not FedProx, so the same loop
        serves every aggregator. ``w_global`` is the weights this round received. `fit` calls
        it for you; a FedProx round whose train function never does logs a warning.
        """
        self.proximal_used = True
        mu = self.fedprox_mu
        if mu <= 0:
            return torch.zeros((), device=self.device)
        terms = [
            (p - self._anchor(name, p)).pow(2).sum()
            for name, p in model.named_parameters()
            if p.requires_grad
        ]
        if not terms:
            return torch.zeros((), device=self.device)
        return 0.5 * mu * torch.stack(terms).sum()

    def _anchor(self, name: str, param: torch.Tensor) -> torch.Tensor:
        """The round-start value of a parameter, on its device (from the received global)."""
        anchor = self._prox_anchor.get(name)
        if anchor is None or anchor.device != param.device:
            start = self.global_state.get(name) if self.global_state is not None else None
            source = start if start is not None else param
            anchor = source.detach().to(device=param.device, dtype=param.dtype).clone()
            self._prox_anchor[name] = anchor
        return anchor

    # -- DP-SGD ---------------------------------------------------------------------
    @property
    def dp_sgd(self) -> dict[str, Any] | None:
        """The job's DP-SGD settings (from resonfl.fl.dp_sgd.DPSGDFedAvg), or None."""
        settings = self.task_args.get("dp_sgd")
        return dict(settings) if settings else None

    @property
    def dp_state_path(self) -> Path:
        return self.state_dir / DP_STATE

    def _dp_saved(self) -> dict[str, Any]:
        """This run's STATE_DIR/dp_accountant.json, or {} (absent, another run's)."""
        path = self.dp_state_path
        if not path.is_file():
            return {}
        saved = json.loads(path.read_text(encoding="utf-8"))
        if self.run_id is not None and saved.get("run_id") != self.run_id:
            self.logger.warning("%s belongs to another run; starting the budget at 0", path.name)
            return {}
        return dict(saved)

    def dp_history(self) -> list[list[float]]:
        """This run's accountant history on this site: [noise_multiplier, sample_rate, steps]."""
        return [list(step) for step in self._dp_saved().get("history", [])]

    def _calibrated_noise(self, target: float, delta: float, q: float, steps: int) -> float:
        """dp_noise_for_target, reused from the state file while its inputs are unchanged (a
        binary search over the accountant: seconds a round otherwise)."""
        key = {"target_epsilon": target, "delta": delta, "sample_rate": q, "steps": steps}
        saved = self._dp_saved().get("calibration") or {}
        if {k: saved.get(k) for k in key} == key and saved.get("noise_multiplier"):
            z = float(saved["noise_multiplier"])
        else:
            z = dp_noise_for_target(target, delta, q, steps)
        self._dp_calibration = {**key, "noise_multiplier": z}
        return z

    def _save_dp_history(self, history: list[list[float]]) -> None:
        state: dict[str, Any] = {"run_id": self.run_id, "history": history}
        if self._dp_calibration is not None:
            state["calibration"] = self._dp_calibration
        write_json(self.dp_state_path, state)

    def _private(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, steps: int
    ) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader, dict[str, Any]]:
        """Wrap model, optimizer and loader for DP-SGD (opacus): per-sample clipping, Gaussian
        noise, Poisson sampling; refuse the round when it would pass the target epsilon.

        Noise and sampling use generators seeded by the OS, never by the job's seed (which
        the server and every site know)."""
        import secrets  # lazy: DP-SGD only
        import warnings  # lazy: DP-SGD only

        from opacus import GradSampleModule  # lazy: only DP-SGD jobs need opacus
        from opacus.data_loader import DPDataLoader
        from opacus.optimizers import DPOptimizer

        dp = self.dp_sgd or {}
        check_dp_model(model)
        target, delta = float(dp["target_epsilon"]), float(dp["delta"])
        q = 1.0 / len(loader)
        z = dp.get("noise_multiplier")
        if z is None:
            z = self._calibrated_noise(target, delta, q, self.num_rounds * steps)
        history = self.dp_history()
        after = dp_epsilon([*history, [z, q, steps]], delta)
        if after > target * (1 + 1e-9):
            raise PrivacyBudgetExhausted(
                f"privacy budget: round {self.current_round} on {self.site_name} would bring "
                f"epsilon to {after:.3g} > target_epsilon {target:g} (delta {delta:g}); the "
                "site did not train and sent nothing"
            )
        # opacus's hooks on a first layer whose input needs no gradient: expected, not a fault
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        noise_gen = torch.Generator(device=self.device).manual_seed(secrets.randbits(63))
        sample_gen = torch.Generator().manual_seed(secrets.randbits(63))
        private_model = GradSampleModule(model)
        private_optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=float(z),
            max_grad_norm=float(dp["max_grad_norm"]),
            expected_batch_size=int(loader.batch_size or 1),
            generator=noise_gen,
        )
        private_loader = DPDataLoader.from_data_loader(loader, generator=sample_gen)
        history.append([float(z), q, steps])
        info = {
            "history": history,
            "dp_epsilon": after,
            "dp_epsilon_next": dp_epsilon([*history, [z, q, steps]], delta),
            "dp_noise_multiplier": float(z),
            "dp_sample_rate": q,
            "dp_delta": delta,
        }
        self.logger.info(
            "DP-SGD: noise multiplier %.4g, clip %.4g, sample rate %.4g, %d steps: epsilon "
            "%.4g of %g after this round (delta %g)",
            z, float(dp["max_grad_norm"]), q, steps, after, target, delta,
        )  # fmt: skip
        return private_model, private_optimizer, private_loader, info

    # -- evaluation --------------------------------------------------------------
    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits; with tta_hflip, the mean of the logits of x and x mirrored left-right.

        tta_hflip is for images only, (N, C, H, W): on any other input the last axis is not
        image width (mirroring a tabular row reverses its features), so it is refused.
        """
        hflip = bool(self.arg("tta_hflip", False))
        if hflip and (not isinstance(x, torch.Tensor) or x.dim() != 4):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"tta_hflip mirrors images and needs (N, C, H, W) input, got {shape}; "
                "turn tta_hflip off for non-image data"
            )
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp_enabled):
            logits = model(x).float()
            if hflip:
                logits = (logits + model(x.flip(-1)).float()) / 2
        return logits

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        dataset: Dataset,
        collate: Callable[..., Any] | None = None,
    ) -> dict[str, float]:
        """Hard-label cross-entropy and top-1 over `dataset` (TTA when tta_hflip)."""
        was_training = model.training
        model.eval()
        model.to(self.device)
        loader = DataLoader(
            dataset,
            batch_size=int(self.arg("eval_batch_size", 256)),
            shuffle=False,
            collate_fn=collate,
            num_workers=self.loader_workers,
        )
        loss_sum, correct, count = 0.0, 0, 0
        for batch in loader:
            x, y = _to_device(batch, self.device)
            logits = self.predict(model, x)
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
            count += int(y.numel())
        model.train(was_training)
        if count == 0:
            return {"val_loss": float("nan"), "top1": float("nan")}
        return {"val_loss": loss_sum / count, "top1": correct / count}

    # -- the standard loop ---------------------------------------------------------
    def fit(
        self,
        model: nn.Module,
        train_dataset: Dataset,
        val_dataset: Dataset | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        collate: Callable[..., Any] | None = None,
    ) -> dict[str, Any]:
        """One round of local training with every built-in fix; returns {samples, metrics}.

        Seeded loader cycled for steps_per_round optimizer steps; AMP on cuda; grad clip;
        label smoothing; FedProx when task_args has fedprox_mu; EMA; optimizer state saved.
        """
        self.seed_everything()
        model.to(self.device)
        model.train()
        samples = len(train_dataset)  # type: ignore[arg-type]
        if samples == 0:
            raise ValueError(f"site {self.site_name} has an empty training set")
        loader = self.data_loader(train_dataset, collate=collate)
        steps = self.steps_per_round(len(loader))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = self.make_optimizer(model, params)
        scheduler = self.make_scheduler(optimizer, steps)
        base_optimizer, train_model, privacy = optimizer, model, None
        if self.dp_sgd:
            # per-sample clipping replaces grad_clip; AMP's loss scaling and FedProx's term are
            # not per-sample, so DPSGDFedAvg's validation refuses them with DP-SGD
            train_model, optimizer, loader, privacy = self._private(model, optimizer, loader, steps)
            self.dp_used = True
        criterion = loss_fn or nn.CrossEntropyLoss(
            label_smoothing=float(self.arg("label_smoothing", 0.0))
        )
        mu = self.fedprox_mu
        if mu > 0:
            self.proximal_term(model)  # anchors every parameter before the first step
        ema = self.start_ema(model)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp_enabled)
        clip = self.args.get("grad_clip")
        lr_start = optimizer.param_groups[0]["lr"]
        losses: list[torch.Tensor] = []
        batches = iter(loader)
        for _ in range(steps):
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(loader)
                batch = next(batches)
            x, y = _to_device(batch, self.device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp_enabled):
                loss = criterion(train_model(x), y)
            total = loss.float()
            if mu > 0:
                total = total + self.proximal_term(model)
            scaler.scale(total).backward()
            if clip and privacy is None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, float(clip))
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            losses.append(loss.detach().float())
        if privacy is not None:
            train_model._close()  # type: ignore[operator]  # opacus: drop hooks and grad samples
            self._save_dp_history(privacy.pop("history"))
        if self.arg("persist_optimizer_state", True):
            self.save_optimizer_state(base_optimizer)
        if ema is not None:
            self.finish_ema(model, ema)
        metrics: dict[str, Any] = {
            "train_loss": float(torch.stack(losses).mean()),
            "steps": steps,
            "lr_start": lr_start,
            "lr_end": base_optimizer.param_groups[0]["lr"],
            **(privacy or {}),
        }
        if val_dataset is not None:
            metrics.update(self.evaluate(model, val_dataset, collate=collate))
        return {"samples": samples, "metrics": metrics}


# ------------------------------------------------------------------ the executor
class GenericClientExecutor:
    """Runs one site's round: load the global model, evaluate it, train, write the update."""

    def __init__(self, task: dict[str, Any], logger: logging.Logger | None = None) -> None:
        missing = [k for k in TASK_KEYS if k not in task]
        if missing:
            raise KeyError(f"task is missing {', '.join(missing)}")
        self.task = task
        self.logger = logger or make_logger(str(task["site"]), int(task["round"]))
        self.job_dir = Path(task["job_dir"]).resolve()

    def _client_config(self) -> dict[str, Any]:
        return json.loads((self.job_dir / CLIENT_CONFIG).read_text(encoding="utf-8"))

    def _set_environ(self, args: dict[str, Any]) -> None:
        task = self.task
        os.environ["CURRENT_ROUND"] = str(task["round"])
        os.environ["NUM_ROUNDS"] = str(task["num_rounds"])
        os.environ["SITE_NAME"] = str(task["site"])
        os.environ["DATA_ROOT"] = str(task["data_root"])
        os.environ["STATE_DIR"] = str(task["state_dir"])
        for key, value in (args.get("extra") or {}).items():
            os.environ[str(key)] = str(value)

    def _import_model_def(self, module_name: str) -> Any:
        """Import model_def.py from the job folder afresh (no stale module between jobs)."""
        if str(self.job_dir) not in sys.path:
            sys.path.insert(0, str(self.job_dir))
        path = self.job_dir / f"{module_name}.py"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module

    def run(self) -> dict[str, Any]:
        task = self.task
        config = self._client_config()
        args = config["executors"][0]["executor"]["args"]
        component = next(c for c in config["components"] if c.get("id") == "model")
        module_name, _, class_name = component["path"].rpartition(".")
        self._set_environ(args)
        began = mark = time.perf_counter()
        phases: dict[str, float] = {}  # where this round's time went (round 0: the cold start)
        model_def = self._import_model_def(module_name)
        phases["import_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        model = model_with_weights(
            getattr(model_def, class_name),
            component.get("args", {}),
            load_weights(task["weights_in"]),
        )

        env = FLEnv(task, args, self.logger)
        # the model trains its own tensors in place: the round-start weights (FedProx's
        # anchor) are a second private mapping of the same file, no copy until read
        env.global_state = load_weights(task["weights_in"])
        phases["build_s"] = time.perf_counter() - mark
        for folder in (env.state_dir, env.out_dir):
            folder.mkdir(parents=True, exist_ok=True)
        model.to(env.device)
        metrics: dict[str, Any] = {}

        started = time.perf_counter()
        eval_fn = getattr(model_def, config.get("eval_fn", "fl_evaluate_model"), None)
        if task.get("mode") == "evaluate":
            return self._evaluate_only(model, env, eval_fn, config)
        if callable(eval_fn):
            for key, value in (eval_fn(model, env, self.logger) or {}).items():
                metrics[f"global_{key}"] = _scalar(value)
        eval_s = time.perf_counter() - started

        started = time.perf_counter()
        train_fn = getattr(model_def, config.get("train_fn", "fl_train_model"))
        out = train_fn(model, env, env.out_dir, self.logger)
        train_s = time.perf_counter() - started
        if env.fedprox_mu > 0 and not env.proximal_used:
            self.logger.warning(
                "FedProx job (mu=%g) but %s never called env.proximal_term(model) (env.fit "
                "does): this site trained without the proximal term, i.e. plain FedAvg",
                env.fedprox_mu,
                config.get("train_fn", "fl_train_model"),
            )
        if env.dp_sgd and not env.dp_used:
            raise RuntimeError(
                f"this job trains with DP-SGD but {config.get('train_fn', 'fl_train_model')} "
                "never trained through env.fit, so its update would carry no privacy guarantee: "
                "nothing was sent. Train with env.fit(model, train_dataset, ...)"
            )
        if isinstance(out, dict):
            samples = int(out["samples"])
            metrics.update({k: _scalar(v) for k, v in (out.get("metrics") or {}).items()})
        else:
            samples = int(out)

        mark = time.perf_counter()
        save_weights(cpu_state_dict(model), task["weights_out"])
        phases.update(
            eval_s=eval_s,
            data_s=env.data_s,
            train_s=train_s - env.data_s,
            save_s=time.perf_counter() - mark,
        )
        phases["executor_s"] = time.perf_counter() - began
        result = {
            "samples": samples,
            "metrics": metrics,
            "train_s": train_s,
            "eval_s": eval_s,
            "phases": phases,
        }
        write_json(task["result_out"], result)
        self.logger.info(
            "round %d done: %d samples, %s",
            env.current_round,
            samples,
            ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)),
        )
        return result

    def _evaluate_only(
        self, model: nn.Module, env: FLEnv, eval_fn: Any, config: dict[str, Any]
    ) -> dict[str, Any]:
        """``mode: evaluate`` (`resonfl evaluate`): the eval function on DATA_ROOT, no training."""
        if not callable(eval_fn):
            name = config.get("eval_fn", "fl_evaluate_model")
            raise ValueError(
                f"model_def.py defines no {name}(model, env, logger): evaluation needs one "
                "(return e.g. env.evaluate(model, your_dataset))"
            )
        started = time.perf_counter()
        metrics = {k: _scalar(v) for k, v in (eval_fn(model, env, self.logger) or {}).items()}
        result = {"metrics": metrics, "eval_s": time.perf_counter() - started}
        write_json(self.task["result_out"], result)
        return result


def run_task(task: dict[str, Any], logger: logging.Logger | None = None) -> dict[str, Any]:
    """Run one task; on error write {"error"} to result_out, print the traceback, return it."""
    try:
        return GenericClientExecutor(task, logger).run()
    except Exception as exc:  # noqa: BLE001 - every failure must reach the runner as a result
        traceback.print_exc(file=sys.stderr)
        error = {"error": f"{type(exc).__name__}: {exc}"}
        if isinstance(task, dict) and task.get("result_out"):
            try:
                write_json(task["result_out"], error)
            except OSError:
                traceback.print_exc(file=sys.stderr)
        return error


def run_task_file(path: str | Path) -> int:
    """Read the task JSON at `path` and run it; the process exit code (0 or 1)."""
    try:
        task = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        traceback.print_exc(file=sys.stderr)
        print(f"cannot read task {path}: {exc}", file=sys.stderr)
        return 1
    result = run_task(task)
    return 1 if "error" in result else 0


def serve(ctl_fd: int = 1) -> int:
    """Run rounds of one job on one site, one request per stdin line, until EOF."""
    ctl = os.fdopen(os.dup(ctl_fd), "w", buffering=1, encoding="utf-8")
    # Everything imported so far (torch, dynamo: about 300k objects) lives as long as the
    # process: keep it out of the per-round gc.collect(), which otherwise scans it all again
    # every round (about 0.1-0.2 s of CPU a round on a small CPU).
    gc.freeze()
    own_environ = dict(os.environ)
    own_path = list(sys.path)
    own_modules = set(sys.modules)
    torch_seed = torch.initial_seed()
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        if not line.strip():
            continue
        request = json.loads(line)
        code = _serve_one(request, own_environ, torch_seed)
        sys.path[:] = own_path
        roots = _round_folders(request)
        for name in set(sys.modules) - own_modules:
            if _loaded_from(sys.modules.get(name), roots):
                sys.modules.pop(name, None)
        ctl.write(json.dumps({"done": request.get("round"), "rc": code}) + "\n")
        ctl.flush()
        if code != 0:
            return code  # a failed round ends the process; the next one starts fresh


def _serve_one(request: dict[str, Any], own_environ: dict[str, str], torch_seed: int) -> int:
    """One round as `--task` runs it: own log on fd 1/2, cwd, environment, fresh RNGs."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    log_fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(own_environ)
    os.environ.update(request.get("env") or {})
    import tempfile  # lazy: --serve only

    tempfile.tempdir = None  # cached on first use: find this round's TMPDIR
    random.seed()  # a fresh process seeds these from the OS, and torch from its default
    np.random.seed()
    torch.manual_seed(torch_seed)
    try:
        code = run_task_file(request["task"])
    except SystemExit as exc:  # job code that exits ends the process too
        code = exc.code if isinstance(exc.code, int) and exc.code else 1
    except BaseException:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    return code


def _round_folders(request: dict[str, Any]) -> list[str]:
    """The round's own folder and its job folder (where model_def and its helpers live)."""
    roots = [os.path.abspath(str(request["cwd"]))]
    try:
        task = json.loads(Path(request["task"]).read_text(encoding="utf-8"))
        roots.append(os.path.abspath(str(task["job_dir"])))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return roots


def _loaded_from(module: Any, roots: list[str]) -> bool:
    """True for a module imported from one of `roots` (dropped between rounds)."""
    origin = getattr(module, "__file__", None)
    if not origin:
        return False
    path = os.path.abspath(str(origin))
    return any(path.startswith(root + os.sep) for root in roots)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run ResonFL client rounds.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--task", help="path to the task JSON: run one round and exit")
    mode.add_argument("--serve", action="store_true", help="run rounds read from stdin")
    parser.add_argument("--ctl-fd", type=int, default=1, help="--serve: fd for done lines")
    ns = parser.parse_args(argv)
    if ns.serve:
        return serve(ns.ctl_fd)
    return run_task_file(ns.task)


if __name__ == "__main__":
    sys.exit(main())
