"""FedProx: FedAvg on the server plus a proximal term in each site's local loss.

Li et al. 2020, "Federated Optimization in Heterogeneous Networks". The server side is plain
FedAvg; the algorithm lives in the client loss ``loss + proximal_term(params, global, mu)``,
which keeps local weights near the round's global weights. ``FedProx.client_task_args`` puts
``{"fedprox_mu": mu}`` into the job's client config, which each round's task carries to the sites.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from resonfl.fl.fedavg import FedAvg


class FedProxArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mu: float = Field(default=0.01, ge=0, description="Proximal coefficient (0 = FedAvg).")


def proximal_term(
    model_params: Mapping[str, torch.Tensor] | Iterable[torch.Tensor],
    global_params: Mapping[str, torch.Tensor] | Iterable[torch.Tensor],
    mu: float,
) -> torch.Tensor:
    """``mu / 2 * sum ||w - w_g||^2`` over the model's parameters, differentiable in ``w``.

    Pass mappings (e.g. ``dict(model.named_parameters())`` and the round's global state dict:
    only the model's keys are used, so buffers in the global are ignored) or two equally long
    sequences of tensors. Move the global tensors to the model's device once per round; they
    are treated as constants (detached).
    """
    if isinstance(model_params, Mapping):
        if not isinstance(global_params, Mapping):
            raise TypeError("model_params is a mapping, so global_params must be one too")
        missing = [k for k in model_params if k not in global_params]
        if missing:
            raise KeyError(f"global_params lacks {missing[:5]}")
        pairs = [(w, global_params[k]) for k, w in model_params.items()]
    else:
        if isinstance(global_params, Mapping):
            raise TypeError("model_params is a sequence, so global_params must be one too")
        pairs = list(zip(model_params, global_params, strict=True))
    total: torch.Tensor | None = None
    for w, w_g in pairs:
        sq = (w - w_g.detach().to(device=w.device, dtype=w.dtype)).pow(2).sum()
        total = sq if total is None else total + sq
    if total is None:
        return torch.zeros(())
    return total * (mu / 2.0)


class FedProx(FedAvg):
    """FedAvg on the server; sends ``fedprox_mu`` for the sites' proximal term."""

    Args = FedProxArgs
    args: FedProxArgs

    @classmethod
    def client_task_args(cls, args: Any) -> dict[str, Any]:
        return {"fedprox_mu": args.mu}


__all__ = ["FedProx", "FedProxArgs", "proximal_term"]
