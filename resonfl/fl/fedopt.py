"""FedOpt: a server-side optimizer steps the global model along the averaged update.

Reddi et al. 2021, "Adaptive Federated Optimization" (Algorithm 2), and Hsu et al. 2019 for
FedAvgM. Each round the pseudo-gradient is ``g = global - fedavg(updates)`` and the server
optimizer (Adam, Yogi, Adagrad, or momentum SGD) applies it with ``server_lr``. As in the paper
there is no bias correction, ``m`` starts at 0 and ``v`` at ``tau**2``. (Flower's FedAdam
differs: ``v`` starts at 0 and its step is bias-corrected, ``eta * sqrt(1-b2^t) / (1-b1^t)``.)

Parameters vs buffers come from the model itself: the server builds the model (in the sandbox)
and the initial weights file names its ``named_parameters()``; the caller passes them to
``bind_model``. Only those keys (floating point) are stepped by the optimizer. Every buffer —
BatchNorm's running statistics, counters, a user's registered ``input_mean`` — is averaged as
in FedAvg, because an optimizer step on a running variance can drive it negative, and a
normalisation constant moved by ``server_lr`` per round is simply wrong.
``Args.buffer_suffixes`` is an override: parameters whose key ends with one of them are
averaged too. A FedOpt with no bound model refuses to run (ModelNotBoundError) rather than
guess from key names.

Server state (``m``/``v`` per parameter, the last stepped round, the parameter names) survives
a restart through ``state_dict()`` / ``load_state_dict()``: ``{"tensors": {"m.<key>": ...,
"v.<key>": ...}, "meta": {"algorithm", "last_round", "steps", "parameters"}}``. Persist it together with each round's global
model; stepping a round that the loaded state already includes raises StateMismatchError.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from resonfl.fl.base import (
    AggregatorState,
    ModelNotBoundError,
    StateDict,
    StateMismatchError,
    _check_state_shape,
)
from resonfl.fl.fedavg import FedAvg, cast_like

BN_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")  # always buffers

Moments = dict[str, torch.Tensor]  # moment name ("m", "v") -> float64 tensor for one key


class FedOptArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    server_lr: float = Field(default=0.01, gt=0, description="Server learning rate (eta).")
    buffer_suffixes: tuple[str, ...] = Field(
        default=(),
        description=(
            "Override: parameters whose key ends with one of these are averaged (FedAvg) "
            "instead of stepped. Buffers are always averaged, found from the model."
        ),
    )


class FedAdamArgs(FedOptArgs):
    beta1: float = Field(default=0.9, ge=0, lt=1, description="Decay of the first moment m.")
    beta2: float = Field(default=0.99, ge=0, lt=1, description="Decay of the second moment v.")
    tau: float = Field(default=1e-3, gt=0, description="Adaptivity (epsilon); v starts at tau^2.")


class FedYogiArgs(FedAdamArgs):
    pass


class FedAdagradArgs(FedOptArgs):
    beta1: float = Field(
        default=0.9, ge=0, lt=1, description="Momentum of m, as in the paper (0: Flower's)."
    )
    tau: float = Field(default=1e-3, gt=0, description="Adaptivity (epsilon); v starts at tau^2.")


class FedAvgMArgs(FedOptArgs):
    server_lr: float = Field(default=1.0, gt=0, description="Server learning rate.")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="Server momentum (beta).")


class FedOpt(FedAvg):
    """FedAvg's mean, then one server-optimizer step on the parameters (not the buffers)."""

    Args: ClassVar[type[BaseModel]] = FedOptArgs
    MOMENTS: ClassVar[tuple[str, ...]] = ()
    args: Any

    def __init__(self, args: Any = None) -> None:
        super().__init__(args)
        self._moments: dict[str, dict[str, torch.Tensor]] = {name: {} for name in self.MOMENTS}
        self._last_round: int | None = None
        self._steps = 0

    def reset(self, global_weights: StateDict, round_num: int) -> None:
        if self._parameters is None:
            raise ModelNotBoundError(
                f"{type(self).__name__} steps parameters and averages buffers, so it needs the "
                "model's parameter names: call bind_model(model) (the platform and the "
                "simulator pass the names from the initial weights file)"
            )
        super().reset(global_weights, round_num)

    def is_server_optimized(self, key: str, tensor: torch.Tensor) -> bool:
        """True for the model's float parameters; False for buffers (averaged as in FedAvg)."""
        if self._parameters is None or key not in self._parameters:
            return False
        last = key.rsplit(".", 1)[-1]
        return tensor.is_floating_point() and last not in self.args.buffer_suffixes

    @abstractmethod
    def _step(self, g: torch.Tensor, state: Moments) -> tuple[torch.Tensor, Moments]:
        """Return (amount to subtract from the weights, new moments) for pseudo-gradient g."""

    def _initial(self, name: str, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(like)

    def _finish(self, global_weights: StateDict, means: dict[str, torch.Tensor]) -> StateDict:
        round_num = self.round_num
        assert round_num is not None
        if self._last_round is not None and round_num <= self._last_round:
            raise StateMismatchError(
                f"{type(self).__name__}: optimizer state already includes round {self._last_round};"
                f" load the state saved with round {round_num - 1}'s global model"
            )
        out: StateDict = {}
        staged: dict[str, Moments] = {}
        for key, x in global_weights.items():
            if not self.is_server_optimized(key, x):
                out[key] = cast_like(means[key], x.dtype)
                continue
            x64 = x.detach().to(device="cpu", dtype=torch.float64)
            g = x64 - means[key]
            delta, staged[key] = self._step(g, self._load_moments(key, g))
            out[key] = (x64 - delta).to(x.dtype)
        for key, moments in staged.items():  # commit only once every key has stepped
            store_dtype = torch.promote_types(global_weights[key].dtype, torch.float32)
            for name, value in moments.items():
                self._moments[name][key] = value.to(store_dtype)
        self._last_round = round_num
        self._steps += 1
        return out

    def _load_moments(self, key: str, like: torch.Tensor) -> Moments:
        moments: Moments = {}
        for name in self.MOMENTS:
            stored = self._moments[name].get(key)
            if stored is None:
                moments[name] = self._initial(name, like)
            elif stored.shape != like.shape:
                raise StateMismatchError(
                    f"{name}.{key}: saved shape {tuple(stored.shape)} != model {tuple(like.shape)}"
                )
            else:
                moments[name] = stored.to(torch.float64)
        return moments

    def state_dict(self) -> AggregatorState:
        tensors = {
            f"{name}.{key}": t.clone()
            for name, per_key in self._moments.items()
            for key, t in per_key.items()
        }
        meta = {
            "algorithm": type(self).__name__,
            "last_round": self._last_round,
            "steps": self._steps,
            "parameters": None if self._parameters is None else sorted(self._parameters),
        }
        return {"tensors": tensors, "meta": meta}

    def load_state_dict(self, state: AggregatorState) -> None:
        _check_state_shape(state)
        meta = state["meta"]
        if meta.get("algorithm") != type(self).__name__:
            raise StateMismatchError(
                f"state was saved by {meta.get('algorithm')!r}, not {type(self).__name__!r}"
            )
        moments: dict[str, dict[str, torch.Tensor]] = {name: {} for name in self.MOMENTS}
        for full_key, tensor in state["tensors"].items():
            name, _, key = full_key.partition(".")
            if name not in moments or not key:
                raise StateMismatchError(f"unexpected state tensor {full_key!r}")
            moments[name][key] = tensor.detach().cpu().clone()
        last_round = meta.get("last_round")
        self._moments = moments
        self._last_round = None if last_round is None else int(last_round)
        self._steps = int(meta.get("steps", 0))
        if meta.get("parameters") is not None:
            self.bind_model(meta["parameters"])


class FedAdam(FedOpt):
    """Adam on the server: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; x -= lr m/(sqrt(v)+tau)."""

    Args = FedAdamArgs
    MOMENTS = ("m", "v")

    def _initial(self, name: str, like: torch.Tensor) -> torch.Tensor:
        return torch.full_like(like, self.args.tau**2) if name == "v" else torch.zeros_like(like)

    def _second_moment(self, v: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
        b2 = self.args.beta2
        return b2 * v + (1 - b2) * g2

    def _step(self, g: torch.Tensor, state: Moments) -> tuple[torch.Tensor, Moments]:
        a = self.args
        m = a.beta1 * state["m"] + (1 - a.beta1) * g
        v = self._second_moment(state["v"], g * g)
        return a.server_lr * m / (v.sqrt() + a.tau), {"m": m, "v": v}


class FedYogi(FedAdam):
    """Yogi on the server: as FedAdam but v = v - (1-b2) g^2 sign(v - g^2) (v grows gently)."""

    Args = FedYogiArgs

    def _second_moment(self, v: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
        return v - (1 - self.args.beta2) * g2 * torch.sign(v - g2)


class FedAdagrad(FedAdam):
    """Adagrad on the server: as FedAdam but v = v + g^2 (v only grows; steps shrink)."""

    Args = FedAdagradArgs

    def _second_moment(self, v: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
        return v + g2


class FedAvgM(FedOpt):
    """Server momentum: m = momentum m + g; x -= lr m. lr=1, momentum=0 is exactly FedAvg."""

    Args = FedAvgMArgs
    MOMENTS = ("m",)

    def _step(self, g: torch.Tensor, state: Moments) -> tuple[torch.Tensor, Moments]:
        m = self.args.momentum * state["m"] + g
        return self.args.server_lr * m, {"m": m}


__all__ = [
    "BN_BUFFER_SUFFIXES",
    "FedAdagrad",
    "FedAdagradArgs",
    "FedAdam",
    "FedAdamArgs",
    "FedAvgM",
    "FedAvgMArgs",
    "FedOpt",
    "FedOptArgs",
    "FedYogi",
    "FedYogiArgs",
]
