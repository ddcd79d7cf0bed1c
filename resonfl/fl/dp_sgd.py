"""DP-SGD on every site (sample-level DP), FedAvg on the server.

Abadi et al. 2016, "Deep Learning with Differential Privacy", with opacus on the sites. Each
site trains through ``env.fit`` with per-sample gradient clipping (``max_grad_norm``),
Gaussian noise (``noise_multiplier`` x ``max_grad_norm``) and Poisson sampling (rate
q = batch_size / site samples); the site's own RDP accountant (STATE_DIR/dp_accountant.json)
turns its steps into epsilon for ``delta``. The guarantee is per site and per sample: every
update the site sends, together, is (epsilon, delta)-DP with respect to adding or removing
one of its samples. Sample-level, so a site's data as a whole is not hidden (DP-FedAvg is
site-level).

``noise_multiplier`` blank: each site calibrates it so that ``num_rounds x local_steps``
steps at its own q spend exactly ``target_epsilon``. Each round a site reports
``dp_epsilon`` (spent so far) and ``dp_epsilon_next`` (after one more round); the server
stops the job after the last round within the target, and a site refuses to train a round
that would pass it (nothing is sent). The job page plots every site's epsilon.

Sites need opacus; the model must have no BatchNorm (GroupNorm instead): checked at submit
on model_def.py's text, and on the built model before a site trains.

Training settings matter more than with FedAvg: Adam and small learning rates drown in the
noise. Start from plain SGD without momentum, a constant lr around 1, batch 64 and ~5 local
steps a round (docs/privacy.md, "What a DP recipe looks like", with the measured cost).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from resonfl.fl.fedavg import FedAvg

# layer names DP-SGD cannot train, as written in model_def.py (the site checks the built model)
_UNSUPPORTED = re.compile(r"\b(BatchNorm[123]d|SyncBatchNorm|LazyBatchNorm[123]d)\b")


class DPSGDArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    target_epsilon: float = Field(
        default=8.0,
        gt=0,
        le=1000,
        description="each site's privacy budget for the whole job: the job stops before any "
        "site passes it",
    )
    delta: float = Field(
        default=1e-5,
        gt=0,
        lt=1,
        description="delta of the (epsilon, delta) guarantee; keep it below 1 / samples per site",
    )
    max_grad_norm: float = Field(
        default=1.0, gt=0, description="C: each sample's gradient is clipped to this L2 norm"
    )
    noise_multiplier: float | None = Field(
        default=None,
        gt=0,
        description="noise std / C; blank = each site picks the smallest that keeps all rounds "
        "within target_epsilon",
    )

    @staticmethod
    def check_model_source(source: str) -> None:
        """ValueError naming a layer DP-SGD cannot train, and the fix."""
        found = sorted(set(_UNSUPPORTED.findall(source)))
        if found:
            raise ValueError(
                f"DP-SGD cannot train {', '.join(found)}: BatchNorm normalizes each sample with "
                "its batch's statistics, so one sample's gradient depends on the others. "
                "Replace it with GroupNorm (nn.GroupNorm(groups, channels)) or LayerNorm"
            )

    @staticmethod
    def check_training(training: Mapping[str, Any]) -> None:
        """ValueError for training settings that break per-sample clipping."""
        if training.get("amp"):
            raise ValueError("amp: float16 loss scaling is not per-sample; turn amp off for DP-SGD")


class DPSGDFedAvg(FedAvg):
    """DP-SGD on each site (opacus, per-sample clipping and noise); FedAvg on the server."""

    Args = DPSGDArgs
    args: DPSGDArgs

    @classmethod
    def client_task_args(cls, args: Any) -> dict[str, Any]:
        return {"dp_sgd": args.model_dump(mode="json")}

    def round_metrics(self, site_metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        spent = [m["dp_epsilon"] for m in site_metrics.values() if "dp_epsilon" in m]
        return {"dp_epsilon": max(spent), "dp_delta": self.args.delta} if spent else {}

    def stop_reason(self, site_metrics: Mapping[str, Mapping[str, float]]) -> str | None:
        target = self.args.target_epsilon
        over = {
            s: m["dp_epsilon_next"]
            for s, m in site_metrics.items()
            if m.get("dp_epsilon_next", 0) > target
        }
        if not over:
            return None
        site, eps = max(over.items(), key=lambda item: item[1])
        return (
            f"privacy budget: one more round would bring {site} to epsilon {eps:.3g} > "
            f"target_epsilon {target:g} (delta {self.args.delta:g}), so the job stopped after "
            f"round {self.round_num}, whose model is the final one"
        )


__all__ = ["DPSGDArgs", "DPSGDFedAvg"]
